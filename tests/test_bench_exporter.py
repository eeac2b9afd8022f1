"""bench/bench_exporter.py still runs (bench/ is not timed here): one small round, every probe
answered, and the table it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_one_small_round(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_exporter.py"),
            "--sizes",
            "6",
            "--delays",
            "0",
            "--concurrency",
            "3",
            "--per-server",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())
    assert (row["targets"], row["hosts"], row["failed"]) == (6, 3, 0)
    assert row["peak_fds"] > 0 and row["peak_rss_mib"] > row["rest_rss_mib"] > 0
    assert "| targets | hosts |" in proc.stdout
