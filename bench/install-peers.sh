#!/usr/bin/env bash
# Install the tools bench/bench_peers.py measures maildiag against. Does nothing for what is
# already there; run it again at will. Needs root for the Debian packages.
#
#   check_smtp, check_imap, check_pop   Debian monitoring-plugins-basic (the Nagios plugins)
#   check_ssl_cert                      Debian monitoring-plugins-contrib; it runs openssl, host,
#                                       bc, file and curl (Recommends we do not install otherwise)
#   swaks                               Debian swaks, with Net::SSLeay and IO::Socket::SSL for --tls
#   sslyze                              PyPI, in its own venv: bench/.peers-venv (git-ignored), so
#                                       the test venv stays as pyproject.toml says
#
# Quiet on success; one line on stderr and a non-zero exit when something cannot be installed.
set -u
cd "$(dirname "$0")"

PLUGINS=/usr/lib/nagios/plugins
PACKAGES=(monitoring-plugins-basic monitoring-plugins-contrib swaks libnet-ssleay-perl
    libio-socket-ssl-perl openssl bind9-host bc file curl)
SSLYZE_VERSION=6.3.1
VENV=.peers-venv

have_debian_peers() {
    local b
    for b in "$PLUGINS/check_smtp" "$PLUGINS/check_imap" "$PLUGINS/check_pop" \
        "$PLUGINS/check_ssl_cert" /usr/bin/swaks /usr/bin/openssl /usr/bin/host /usr/bin/bc \
        /usr/bin/file /usr/bin/curl; do
        [ -x "$b" ] || return 1
    done
    perl -MNet::SSLeay -MIO::Socket::SSL -e1 2>/dev/null
}

if ! have_debian_peers; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-peers: ${PACKAGES[*]} missing and not root, cannot install" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-peers: ${PACKAGES[*]} missing and apt-get not available" >&2
        exit 1
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: monitoring-plugins-contrib recommends dozens of Perl and SNMP
    # packages that none of the plugins measured here uses
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
        >"$log" 2>&1; then
        echo "install-peers: apt-get install failed: $(grep -E '^(E|W):' "$log" | head -1)" >&2
        exit 1
    fi
    if ! have_debian_peers; then
        echo "install-peers: installed ${PACKAGES[*]} but a peer is still missing" >&2
        exit 1
    fi
fi

if ! "$VENV/bin/sslyze" --help >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" ||
        ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "sslyze==$SSLYZE_VERSION" >/dev/null 2>&1 ||
        ! "$VENV/bin/sslyze" --help >/dev/null 2>&1; then
        echo "install-peers: could not install sslyze $SSLYZE_VERSION into bench/$VENV" >&2
        exit 1
    fi
fi
exit 0
