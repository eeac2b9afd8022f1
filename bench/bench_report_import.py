"""What the text report costs a ``check`` at start-up: its import time over the modules every
check has loaded by then, beside rich's (the library the report used before), when installed.

    python bench/bench_report_import.py [--runs 30]

Each case is a fresh interpreter (the venv's), interleaved with the others, N times; the
median and the minimum are printed (the minimum is the least disturbed on a shared machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time

BASE = "import maildiag.report, maildiag.models, maildiag.terminal"
CASES = {
    "base (report, models, terminal)": BASE,
    "base + text report + progress": BASE
    + "; import maildiag.report.text, maildiag.report.progress",
    "base + rich (console, table, markup, status)": (
        BASE + "; import rich.console, rich.table, rich.markup, rich.status"
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    cases = dict(CASES)
    if importlib.util.find_spec("rich") is None:
        del cases["base + rich (console, table, markup, status)"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, code in cases.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[name].append((time.perf_counter() - started) * 1000)
    base = min(times["base (report, models, terminal)"])
    for name, values in times.items():
        low = min(values)
        print(
            f"{name:46} median {statistics.median(values):6.1f} ms  min {low:6.1f} ms"
            f"  (+{low - base:.1f} ms over base)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
