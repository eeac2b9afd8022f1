#!/usr/bin/env bash
# Install the headless browser the HTML report's test renders the report in: Chromium and its
# WebDriver from Debian's packages. Does nothing when both are there. Needs root to install;
# quiet on success. Exits non-zero with one line on stderr when they are missing and cannot be
# installed.
set -u

have() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

fail() {
    echo "browser-deps: $*" >&2
    exit 1
}

have && exit 0
[ "$(id -u)" = 0 ] || fail "chromium missing and not root, cannot install"
command -v apt-get >/dev/null 2>&1 || fail "chromium missing and apt-get not available"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! apt-get install -y -qq --no-install-recommends chromium chromium-driver >"$log" 2>&1; then
    # no package index yet (a fresh container): fetch it once and try again
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >>"$log" 2>&1; then
        fail "apt-get install chromium chromium-driver failed: $(grep -E '^(E|W):' "$log" | head -1)"
    fi
fi
have || fail "installed chromium and chromium-driver but the commands are still missing"
exit 0
