"""Run every maildiag benchmark and print each as a ratio against its target.

    python bench/run.py            # everything (about a minute)
    python bench/run.py --quick    # fewer cold-start repetitions

Absolute times are noisy on a shared machine; the ratios measured within one run are what
counts. Benchmarks:

- cold start: ``maildiag --help`` and ``maildiag explain --json TEXT`` against ``python -c pass``
  on the same interpreter (the venv's), median of N interleaved runs — target <= 3;
- check: three slow services against the slowest alone — target <= 1.2; every port filtered —
  the whole run within --timeout + 1 s (bench/bench_check.py);
- discovery: the provider database's load time with the ISPDB, every ISPDB domain answered
  offline and agreeing with the ISPDB, and a silent network's cost (bench/bench_discovery.py);
- rules: every rule's regexes on adversarial text (no catastrophic backtracking) — the
  slowest rule under tests/test_properties.py's RULE_LIMIT;
- explain throughput in-process and ``explain --file`` on a 100,000-line Postfix log
  (bench/bench_explain.py, the rule developer's benchmark: run here and its lines shown as is);
- side by side with the Nagios plugins, swaks, check_ssl_cert and sslyze on the same loopback
  servers (bench/bench_peers.py, issue 17's table and targets; one line and no verdict when the
  peers are not installed: ``bash bench/install-peers.sh``). About 6 minutes, 1.5 with --quick.

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_check import Result, bench_filtered, bench_slow  # noqa: E402
from bench_discovery import bench_ispdb, bench_providers, bench_silent  # noqa: E402
from procs import bench_env, compile_package, maildiag_entry  # noqa: E402

EXPLAIN_TEXT = "553 5.7.1 Sender address rejected: not owned by auth user."


def _time(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=60
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{' '.join(cmd[-3:])} exited {proc.returncode}: {last}")
    return elapsed


def bench_cold(repeat: int) -> list[Result]:
    env = bench_env()
    compile_package(env)
    baseline = [sys.executable, "-c", "pass"]
    commands = {
        "maildiag --help": [*maildiag_entry(), "--help"],
        "maildiag explain --json": [*maildiag_entry(), "explain", "--json", EXPLAIN_TEXT],
    }
    # one warm-up of each (page cache, the rule cache), then interleaved rounds
    times: dict[str, list[float]] = {"base": [], **{name: [] for name in commands}}
    broken: dict[str, str] = {}
    for name, cmd in commands.items():
        try:
            _time(cmd, env)
        except RuntimeError as exc:
            broken[name] = str(exc)
    _time(baseline, env)
    for _ in range(repeat):
        times["base"].append(_time(baseline, env))
        for name, cmd in commands.items():
            if name not in broken:
                times[name].append(_time(cmd, env))
    base = statistics.median(times["base"])
    results = []
    for name in commands:
        if name in broken:
            results.append(
                Result(
                    f"cold {name} / python -c pass",
                    float("inf"),
                    3.0,
                    "ratio",
                    f"could not run: {broken[name]}",
                )
            )
            continue
        median = statistics.median(times[name])
        results.append(
            Result(
                f"cold {name} / python -c pass",
                median / base,
                3.0,
                "ratio",
                f"median {median * 1000:.0f} ms vs {base * 1000:.0f} ms ({repeat} runs each)",
            )
        )
    return results


def bench_explain() -> tuple[bool, str]:
    script = HERE / "bench_explain.py"
    if not script.exists():
        return False, "bench/bench_explain.py is not there yet (the rules developer's benchmark)"
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    text = (proc.stdout + ("\n" + proc.stderr if proc.returncode else "")).rstrip()
    return proc.returncode == 0, text


def bench_peers(quick: bool) -> tuple[bool, str]:
    script = HERE / "bench_peers.py"
    proc = subprocess.run(
        [sys.executable, str(script), *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).rstrip()


def bench_rules(top: int = 5) -> Result:
    """Each rule's regexes on adversarial text (tests/test_properties.py): the slowest rule."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_properties import RULE_LIMIT, rule_timings

    from maildiag.rulebase import RuleBase

    rulebase = RuleBase.load(cache=False)
    timings = rule_timings(rulebase)
    worst = timings[0] if timings else (0.0, "-", "-")
    listing = "; ".join(f"{rid} {secs * 1000:.1f} ms ({name})" for secs, rid, name in timings[:top])
    return Result(
        f"slowest rule on adversarial text ({len(timings)} rules), seconds",
        worst[0],
        RULE_LIMIT,
        "s",
        listing,
    )


def _show(r: Result) -> bool:
    mark = "ok  " if r.ok else "OVER"
    print(f"{mark} {r.name}: {r.value:.2f} {r.unit} (target <= {r.target:g})")
    if r.detail:
        print(f"     {r.detail}")
    return r.ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    all_ok = True
    print("== cold start")
    for r in bench_cold(7 if args.quick else 21):
        all_ok &= _show(r)
    print("== check on loopback peers")
    for bench in (bench_slow, bench_filtered):
        try:
            all_ok &= _show(bench())
        except Exception as exc:  # noqa: BLE001 - a benchmark that cannot run is a failure
            print(f"OVER {bench.__name__}: could not run: {exc}")
            all_ok = False
    print("== discovery (bench/bench_discovery.py)")
    for bench in (bench_providers, bench_ispdb, bench_silent):
        try:
            all_ok &= _show(bench())
        except Exception as exc:  # noqa: BLE001 - a benchmark that cannot run is a failure
            print(f"OVER {bench.__name__}: could not run: {exc}")
            all_ok = False
    print("== rule matcher (no catastrophic backtracking)")
    try:
        all_ok &= _show(bench_rules())
    except Exception as exc:  # noqa: BLE001
        print(f"OVER bench_rules: could not run: {exc}")
        all_ok = False
    print("== explain (bench/bench_explain.py)")
    ok, text = bench_explain()
    print("\n".join(("     " if line.strip() else "") + line for line in text.splitlines()))
    print(f"{'ok  ' if ok else 'OVER'} bench_explain.py {'met its targets' if ok else 'failed'}")
    all_ok &= ok
    print("== side by side with the peers (bench/bench_peers.py)")
    ok, text = bench_peers(args.quick)
    print("\n".join(("     " if line.strip() else "") + line for line in text.splitlines()))
    print(f"{'ok  ' if ok else 'OVER'} bench_peers.py {'met its targets' if ok else 'failed'}")
    all_ok &= ok
    print("== all targets met" if all_ok else "== some targets missed")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
