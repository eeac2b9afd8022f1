"""The gate in front of the suite: missing servers skip with one reason, but fail under CI
(Postfix/Dovecot/dnsmasq, and the Exim and Cyrus unpacked into their prefix alike)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/integration/test_servers_smoke.py::test_refused_port"


def run_without_servers(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MAILDIAG_IT_SBIN"] = "/nonexistent-sbin"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_missing_servers_skip_with_one_reason() -> None:
    proc = run_without_servers(ci=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
    assert "missing /nonexistent-sbin/postfix" in proc.stdout
    assert "scripts/integration-deps.sh" in proc.stdout


def test_missing_servers_fail_under_ci() -> None:
    proc = run_without_servers(ci="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout
    assert "integration servers unavailable under CI" in proc.stdout


FAMILY_TESTS = [
    "tests/integration/test_families_smoke.py::test_exim_submission_words",
    "tests/integration/test_families_smoke.py::test_cyrus_imap_words",
]


def run_without_prefix(ci: str | None) -> subprocess.CompletedProcess[str]:
    """The Exim and Cyrus tests with their prefix missing (Postfix/Dovecot as they are)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MAILDIAG_IT_PREFIX"] = "/nonexistent-prefix"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *FAMILY_TESTS],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_missing_families_skip_with_one_reason() -> None:
    proc = run_without_prefix(ci=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped" in proc.stdout
    assert "Exim not unpacked (missing /nonexistent-prefix/usr/sbin/exim4)" in proc.stdout
    assert "Cyrus IMAP not unpacked (missing /nonexistent-prefix/" in proc.stdout
    assert "scripts/integration-deps.sh" in proc.stdout


def test_missing_families_fail_under_ci() -> None:
    proc = run_without_prefix(ci="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 errors" in proc.stdout
    assert "integration servers unavailable under CI: Exim not unpacked" in proc.stdout
