"""Debian's ``prometheus`` and ``promtool``, for the tests that run them.

scripts/integration-deps.sh unpacks Debian's prometheus package into a prefix of its own,
``$MAILDIAG_PROMETHEUS_PREFIX`` (default /opt/maildiag-prometheus), rather than installing it:
an installed package would start a Prometheus service listening on every interface. A
``prometheus`` on PATH (an installed package) is used as well. Without them a test is skipped,
or fails under CI, which must run it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PREFIX = Path(os.environ.get("MAILDIAG_PROMETHEUS_PREFIX", "/opt/maildiag-prometheus"))


def find(name: str) -> Path | None:
    """The executable ``name`` (prometheus, promtool), or None."""
    unpacked = PREFIX / "usr" / "bin" / name
    if os.access(unpacked, os.X_OK):
        return unpacked
    found = shutil.which(name)
    return Path(found) if found else None


def require(name: str) -> Path:
    found = find(name)
    if found is None:
        reason = f"{name} not found (run scripts/integration-deps.sh, or install prometheus)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{reason}: CI must run this test", pytrace=False)
        pytest.skip(reason)
    return found
