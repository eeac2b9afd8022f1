#!/bin/sh
# Write maildiag's metrics for node_exporter's textfile collector, atomically.
#
#   maildiag-textfile.sh [TARGETS_YAML]
#
# node_exporter must run with --collector.textfile.directory=$TEXTFILE_DIR. The metrics go to a
# temporary file in the same directory (node_exporter reads only *.prom, so it never sees a
# half-written file) and are renamed over maildiag.prom in one step. When maildiag cannot run
# at all (exit 3: bad config, unreadable rules) the previous file is kept and this script exits
# 3; alert on staleness with maildiag_last_run_timestamp_seconds (see maildiag-alerts.yml).
#
# Environment:
#   TEXTFILE_DIR   default /var/lib/node_exporter/textfile_collector
#   MAILDIAG       the maildiag executable, default: maildiag from PATH
#   MAILDIAG_ENV   optional file of VAR=value lines (the passwords named by password_env in the
#                  targets file); read here so no password is ever on a command line
#
# cron (/etc/cron.d/maildiag):
#   */15 * * * * prometheus /usr/local/bin/maildiag-textfile.sh /etc/maildiag/targets.yaml
set -u

config=${1:-/etc/maildiag/targets.yaml}
dir=${TEXTFILE_DIR:-/var/lib/node_exporter/textfile_collector}
maildiag=${MAILDIAG:-maildiag}

if [ -n "${MAILDIAG_ENV:-}" ]; then
    set -a
    . "$MAILDIAG_ENV"
    set +a
fi

tmp=$(mktemp "$dir/.maildiag.prom.XXXXXX") || exit 3
trap 'rm -f "$tmp"' EXIT

"$maildiag" check --config "$config" --format prometheus >"$tmp"
rc=$?
# 0, 1 and 2 all come with a complete report: the metrics say what is wrong.
if [ "$rc" -le 2 ] && [ -s "$tmp" ]; then
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dir/maildiag.prom"
    exit 0
fi
echo "maildiag-textfile: maildiag exited with $rc; keeping the previous $dir/maildiag.prom" >&2
exit 3
