#!/usr/bin/env bash
# Install the real mail servers the integration suite runs against (tests/integration):
# Postfix (SMTP), Dovecot (IMAP, POP3, SASL) and dnsmasq (DNS), from Debian's packages; and Exim
# (SMTP) and Cyrus IMAP/POP3, whose packages conflict with Postfix's and Dovecot's as installed
# packages, unpacked (apt-get download + dpkg-deb -x, with the libraries this machine lacks) into
# a private prefix, $MAILDIAG_IT_PREFIX (default /opt/maildiag-it), from where the suite runs them.
# Debian's prometheus package (the server that scrapes `maildiag exporter` in the suite, and
# promtool for examples/prometheus) is unpacked the same way into $MAILDIAG_PROMETHEUS_PREFIX
# (default /opt/maildiag-prometheus): installed, it would start a Prometheus service listening on
# every interface. A prometheus and promtool already on PATH are used instead.
# Does nothing when everything is already there. Needs root to install; quiet on success.
# Exits non-zero with one line on stderr when the servers are missing and cannot be installed.
set -u

PACKAGES=(postfix dovecot-imapd dovecot-pop3d dnsmasq-base)
BINARIES=(/usr/sbin/postfix /usr/sbin/dovecot /usr/sbin/dnsmasq)

PREFIX=${MAILDIAG_IT_PREFIX:-/opt/maildiag-it}
# What the prefix holds: the servers, saslpasswd2 (Cyrus's password database) and the SASL
# plugins Cyrus logs in with (unpacked too, so a machine without them needs no install).
UNPACKED=(exim4-daemon-light cyrus-common cyrus-imapd cyrus-pop3d sasl2-bin libsasl2-modules
    libsasl2-modules-db)
RUNS=(usr/sbin/exim4 usr/lib/cyrus/bin/master usr/lib/cyrus/bin/imapd usr/lib/cyrus/bin/pop3d
    usr/sbin/saslpasswd2)
# Exim's Debian build looks its user up by name at start: the user its package would create.
EXIM_USER=Debian-exim
PROMETHEUS_PREFIX=${MAILDIAG_PROMETHEUS_PREFIX:-/opt/maildiag-prometheus}

fail() {
    echo "integration-deps: $*" >&2
    exit 1
}

have_system() {
    local b
    for b in "${BINARIES[@]}"; do
        [ -x "$b" ] || return 1
    done
    # dovecot-imapd / -pop3d ship the protocol binaries separately from dovecot-core
    [ -x /usr/lib/dovecot/imap-login ] && [ -x /usr/lib/dovecot/pop3-login ]
}

# The directories of a tree that hold shared libraries, as an LD_LIBRARY_PATH.
lib_path() {
    find "$1" -name '*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:
}

# Shared libraries the binaries (and the libraries) of a tree need and nobody provides.
missing_libs() {
    local root=$1 path f
    path=$(lib_path "$root")
    for f in "${RUNS[@]}"; do
        [ -e "$root/$f" ] || { echo "missing-binary:$f"; continue; }
        LD_LIBRARY_PATH=$path ldd "$root/$f" 2>/dev/null
    done | awk '/not found/ {print $1} /^missing-binary:/ {print}' | sort -u
}

have_prefix() {
    [ -f "$PREFIX/.complete" ] && getent passwd "$EXIM_USER" >/dev/null &&
        [ -z "$(missing_libs "$PREFIX")" ]
}

have_prometheus() {
    { [ -x "$PROMETHEUS_PREFIX/usr/bin/prometheus" ] && [ -x "$PROMETHEUS_PREFIX/usr/bin/promtool" ]; } ||
        { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }
}

have_system && have_prefix && have_prometheus && exit 0

[ "$(id -u)" = 0 ] || fail "servers missing and not root, cannot install"
command -v apt-get >/dev/null 2>&1 || fail "servers missing and apt-get not available"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$log" "$work"' EXIT
updated=0
apt_update() {
    [ "$updated" = 1 ] && return 0
    updated=1
    apt-get update -qq >"$log" 2>&1
}

if ! have_system; then
    # Postfix's debconf question would otherwise stop an unattended install.
    echo "postfix postfix/main_mailer_type select No configuration" |
        debconf-set-selections 2>/dev/null || true
    if ! { apt_update && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
        >>"$log" 2>&1; then
        fail "apt-get install ${PACKAGES[*]} failed: $(grep -E '^(E|W):' "$log" | head -1)"
    fi
    have_system || fail "installed ${PACKAGES[*]} but the server binaries are still missing"
fi

getent passwd "$EXIM_USER" >/dev/null ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$EXIM_USER" >>"$log" 2>&1 ||
    fail "could not create the user $EXIM_USER that Exim runs as"

# Debian's prometheus: Go binaries that need only libc, unpacked whole into their own prefix.
install_prometheus() {
    local dir=$work/prometheus
    mkdir -p "$dir/debs"
    chmod 755 "$work" "$dir" "$dir/debs"
    if ! (cd "$dir/debs" && apt-get download prometheus) >>"$log" 2>&1; then
        apt_update && (cd "$dir/debs" && apt-get download prometheus) >>"$log" 2>&1 ||
            fail "apt-get download prometheus failed: $(grep -E '^(E|W):' "$log" | tail -1)"
    fi
    dpkg-deb -x "$dir"/debs/prometheus_*.deb "$dir/root" || fail "dpkg-deb -x prometheus failed"
    "$dir/root/usr/bin/prometheus" --version >>"$log" 2>&1 ||
        fail "unpacked prometheus but it does not run: $(tail -1 "$log")"
    rm -rf "$PROMETHEUS_PREFIX.new"
    mkdir -p "$(dirname "$PROMETHEUS_PREFIX")"
    cp -a "$dir/root" "$PROMETHEUS_PREFIX.new" || fail "could not write $PROMETHEUS_PREFIX.new"
    chmod 755 "$PROMETHEUS_PREFIX.new"
    rm -rf "$PROMETHEUS_PREFIX" && mv "$PROMETHEUS_PREFIX.new" "$PROMETHEUS_PREFIX" ||
        fail "could not move $PROMETHEUS_PREFIX.new to $PROMETHEUS_PREFIX"
}
have_prometheus || install_prometheus
have_prefix && exit 0

# Download into $work/debs (apt needs an index: update once if it has none), unpack into
# $work/root, then add the libraries still missing, looked for among the library packages the
# unpacked ones depend on that this machine has not installed, until nothing is missing.
download() {
    (cd "$work/debs" && apt-get download "$@") >>"$log" 2>&1 && return 0
    apt_update && (cd "$work/debs" && apt-get download "$@") >>"$log" 2>&1
}
installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}
mkdir -p "$work/debs" "$work/root"
chmod 755 "$work" "$work/debs"
download "${UNPACKED[@]}" || fail "apt-get download ${UNPACKED[*]} failed: $(grep -E '^(E|W):' "$log" | tail -1)"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root" || fail "dpkg-deb -x $(basename "$deb") failed"
done
declare -A seen=()
for round in 1 2 3 4 5; do
    missing=$(missing_libs "$work/root")
    [ -z "$missing" ] && break
    candidates=()
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -f "$deb" Depends 2>/dev/null
    done | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g' |
        grep -E '^lib' | sort -u >"$work/depends"
    while read -r pkg; do
        [ -n "${seen[$pkg]:-}" ] && continue
        seen[$pkg]=1
        installed "$pkg" || candidates+=("$pkg")
    done <"$work/depends"
    [ "${#candidates[@]}" -gt 0 ] || break
    mkdir -p "$work/candidates"
    (cd "$work/candidates" && apt-get download "${candidates[@]}") >>"$log" 2>&1 ||
        fail "apt-get download ${candidates[*]} failed: $(grep -E '^(E|W):' "$log" | tail -1)"
    pattern=$(echo "$missing" | sed 's/[.+]/\\&/g' | paste -sd'|')
    for deb in "$work"/candidates/*.deb; do
        if dpkg-deb -c "$deb" 2>/dev/null | grep -qE "/($pattern)( |$)"; then
            dpkg-deb -x "$deb" "$work/root" || fail "dpkg-deb -x $(basename "$deb") failed"
            mv "$deb" "$work/debs/"
        fi
    done
    rm -rf "$work/candidates"
done
missing=$(missing_libs "$work/root")
[ -z "$missing" ] || fail "unpacked ${UNPACKED[*]} but still missing: $(echo "$missing" | paste -sd' ')"

(cd "$work/debs" && ls) >"$work/root/.complete"
rm -rf "$PREFIX.new"
mkdir -p "$(dirname "$PREFIX")"
cp -a "$work/root" "$PREFIX.new" || fail "could not write $PREFIX.new"
chmod 755 "$PREFIX.new"
rm -rf "$PREFIX" && mv "$PREFIX.new" "$PREFIX" || fail "could not move $PREFIX.new to $PREFIX"
have_prefix || fail "unpacked into $PREFIX but the servers there still cannot run"
exit 0
