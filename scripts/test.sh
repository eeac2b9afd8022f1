#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs maildiag with its test dependencies into
# .venv, installs Postfix/Dovecot/dnsmasq and unpacks Exim/Cyrus for the integration suite, and
# headless Chromium for the HTML report's browser test, when it can (as root), and runs every test.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not integration"`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

if ! bash scripts/integration-deps.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "integration servers could not be installed, and CI must run them" >&2
    exit 1
  fi
  echo "integration servers unavailable here: the integration tests will skip" >&2
fi

# Headless Chromium for the HTML report's browser test (tests/test_html_report.py).
if ! bash scripts/browser-deps.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "headless Chromium could not be installed, and CI must run the browser test" >&2
    exit 1
  fi
  echo "headless Chromium unavailable here: the browser test will skip" >&2
fi

# Lint and types first: they take seconds and name the line that is wrong.
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check --quiet src tests bench scripts
.venv/bin/mypy
# the layers read top-down, no import circles (pyproject.toml [tool.importlinter])
.venv/bin/lint-imports --no-cache --no-logo

# pytest exits 5 when it collected no test: set -e makes that a failure too.
exec .venv/bin/python -m pytest "$@"
