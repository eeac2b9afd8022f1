#!/usr/bin/env bash
# Install the real mail servers the integration suite runs against (tests/integration):
# Postfix (SMTP), Dovecot (IMAP, POP3, SASL) and dnsmasq (DNS), from Debian's packages.
# Does nothing when they are already there. Needs root to install; quiet on success.
# Exits non-zero with one line on stderr when the servers are missing and cannot be installed.
set -u

PACKAGES=(postfix dovecot-imapd dovecot-pop3d dnsmasq-base)
BINARIES=(/usr/sbin/postfix /usr/sbin/dovecot /usr/sbin/dnsmasq)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do
        [ -x "$b" ] || return 1
    done
    # dovecot-imapd / -pop3d ship the protocol binaries separately from dovecot-core
    [ -x /usr/lib/dovecot/imap-login ] && [ -x /usr/lib/dovecot/pop3-login ]
}

have_all && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "integration-deps: ${PACKAGES[*]} missing and not root, cannot install" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "integration-deps: ${PACKAGES[*]} missing and apt-get not available" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# Postfix's debconf question would otherwise stop an unattended install.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
    >"$log" 2>&1; then
    echo "integration-deps: apt-get install ${PACKAGES[*]} failed: $(grep -E '^(E|W):' "$log" | head -1)" >&2
    exit 1
fi
if ! have_all; then
    echo "integration-deps: installed ${PACKAGES[*]} but the server binaries are still missing" >&2
    exit 1
fi
exit 0
