"""Benchmarks of discovery.

providers: loading the provider database (it is on the path of every ``check``): the hand-written
           entries alone (what maildiag loaded before the ISPDB shipped) and with Thunderbird's
           ISPDB (963 domain entries); minimum and median of N loads in one process. Target: the
           full load's median <= 50 ms.
ispdb:     every ISPDB domain through ``maildiag settings --json`` in-process, with a resolver
           that never answers: how many are answered offline (source "provider"), and for how
           many the first server per service is one the ISPDB lists. Target: at most 3 % not
           answered that way (agreement >= 97 %).
silent:    ``python -m maildiag check user@unknown-domain.test --resolver <silent> --timeout 3``,
           the wall time of the whole process (median of 3). Target: <= timeout + 1.5 s.

``python bench/bench_discovery.py`` runs all three; bench/run.py runs them with the others.
"""

from __future__ import annotations

import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_check import Result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SILENT_TIMEOUT = 3.0


def bench_providers(repeat: int = 40) -> Result:
    from maildiag.discovery.providers import load_providers

    def timed(ispdb: bool) -> list[float]:
        out = []
        for _ in range(repeat):
            started = time.perf_counter()
            load_providers(ispdb=ispdb)
            out.append(time.perf_counter() - started)
        return out

    hand, full = timed(False), timed(True)
    median = statistics.median(full)
    detail = (
        f"hand-written only: min {min(hand) * 1000:.1f} ms, median "
        f"{statistics.median(hand) * 1000:.1f} ms; with the ISPDB: min {min(full) * 1000:.1f} ms, "
        f"median {median * 1000:.1f} ms ({repeat} loads each)"
    )
    return Result("provider database load, median ms", median * 1000, 50.0, "ms", detail)


def bench_ispdb() -> Result:
    from maildiag.commands.settings import run_settings
    from maildiag.discovery.providers import load_providers

    db = load_providers()
    shipped = json.loads((ROOT / "rules/providers/ispdb/ispdb.json").read_text(encoding="utf-8"))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    resolver = f"127.0.0.1:{silent.getsockname()[1]}"
    domains = answered = agree = 0
    disagree: list[str] = []
    try:
        for entry in shipped["providers"]:
            for domain in entry["domains"]:
                domains += 1
                out = io.StringIO()
                run_settings(
                    f"user@{domain}",
                    as_json=True,
                    lang="en",
                    resolver=resolver,
                    timeout=1,
                    out=out,
                    providers=db,
                )
                doc = json.loads(out.getvalue())
                if doc["discovery"]["source"] != "provider":
                    continue
                answered += 1
                first = {
                    s["service"]: (s["host"], s["port"], s["security"]) for s in doc["servers"]
                }
                listed = {
                    svc: {(h.replace("%EMAILDOMAIN%", domain), p, s) for h, p, s, _ in specs}
                    for svc, specs in entry["servers"].items()
                }
                if all(first.get(svc) in specs for svc, specs in listed.items()):
                    agree += 1
                else:
                    disagree.append(domain)
    finally:
        silent.close()
    share = 100.0 * agree / domains if domains else 0.0
    detail = (
        f"{answered} of {domains} domains answered offline; first servers agree for {agree} "
        f"({share:.1f} %); differ: {', '.join(disagree) or 'none'}"
    )
    # unanswered or disagreeing, in per cent of the ISPDB's domains: at most 3 (>= 97 % agree)
    return Result(
        "ISPDB domains not answered as the ISPDB does, %", 100.0 - share, 3.0, "%", detail
    )


def bench_silent(runs: int = 3) -> Result:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    env = {**os.environ, "LANG": "C.UTF-8"}
    times = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "maildiag",
                    "check",
                    "user@unknown-domain.test",
                    "--resolver",
                    f"127.0.0.1:{port}",
                    "--timeout",
                    f"{SILENT_TIMEOUT:g}",
                    "--json",
                ],
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            times.append(time.perf_counter() - started)
    finally:
        silent.close()
    median = statistics.median(times)
    detail = f"--timeout {SILENT_TIMEOUT:g}: " + ", ".join(f"{t:.2f} s" for t in times)
    return Result("silent network, check wall time, s", median, SILENT_TIMEOUT + 1.5, "s", detail)


def main() -> int:
    ok = True
    for bench in (bench_providers, bench_ispdb, bench_silent):
        result = bench()
        ok &= result.ok
        mark = "ok  " if result.ok else "OVER"
        print(
            f"{mark} {result.name}: {result.value:.2f} {result.unit} (target <= {result.target:g})"
        )
        print(f"     {result.detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
