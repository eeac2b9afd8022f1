#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs maildiag with its test dependencies into
# .venv, installs Postfix/Dovecot/dnsmasq and unpacks Exim/Cyrus for the integration suite, and
# headless Chromium for the HTML report's browser test, when it can (as root), and runs every test.
# Extra arguments make it one pytest run with them (e.g. `bash scripts/test.sh -m "not integration"`).
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
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Most tests wait on sockets, not on the CPU: three workers (one test file each at a time, so a
# file's fixtures are built once) take a quarter of the time on two cores. The integration tests
# share one set of real servers and run alone, after them.
.venv/bin/python -m pytest -m "not integration" -n "${MAILDIAG_TEST_WORKERS:-3}" --dist loadfile
exec .venv/bin/python -m pytest -m integration
