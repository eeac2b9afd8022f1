"""The fixed cost of a check (issue 17): what a healthy run imports and loads, how it exits, and
the fast paths' answers being the same as the slow ones'. Speed itself is measured in bench/
(bench_peers.py, profile_check.py); these tests pin what makes it, never a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# a check with every server an IP address and a verified chain needs none of these
HEAVY = ("dns", "cryptography")


def run_python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


# -- the process ends without finalization --------------------------------------------------------

EXIT_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('finalized\\n'))\n"
    "sys.argv = ['maildiag', *sys.argv[1:]]\n"
    "from maildiag.__main__ import run\n"
    "run()\n"
)


def test_console_entry_exits_without_finalization(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, "maildiag 0.1.0\n", "")


def test_console_entry_keeps_the_exit_code_and_flushes_both_streams(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "check")
    assert p.returncode == 3
    assert p.stderr.startswith("maildiag: Missing argument") and "finalized" not in p.stderr
    p = run_python(EXIT_PROBE, tmp_path, "explain", "--json", "535 5.7.8 authentication failed")
    assert p.returncode == 0 and "finalized" not in p.stderr
    assert json.loads(p.stdout)["findings"][0]["category"] == "auth_failed"


def test_console_script_is_the_fast_entry() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["maildiag"] == "maildiag.__main__:run"
