"""Where the time and memory of one whole-mailbox ``maildiag check`` go, servers answering at once.

The check is bench/bench_peers.py's whole-mailbox work (SMTP 587 STARTTLS, IMAP 993, POP3 995,
no password, no clock, Nagios output) against the same servers (real Postfix and Dovecot when
they can run here, else the scripted ones). Sections, each the median of ``--runs`` fresh
processes unless said otherwise:

1. the process: spawn to reap, split into interpreter start, maildiag's main() and exit, beside
   ``python -c pass``;
2. the main thread's wall time, booked to the innermost of: imports, CA bundle loading, rule base
   and provider database loading, YAML, discovery, thread start, waiting for the sessions,
   diagnosis, rendering, other Python (bench/trace_check.py ``timeline``);
3. each session thread: when it starts, how long it lives, and what it spends that on;
4. ``python -X importtime`` of the same command: the 25 slowest imports by cumulative time, the
   total, and the total per top-level package;
5. cProfile of every thread of one run: the top functions by cumulative time;
6. peak RSS, and what each group of imports adds (in one process, in load order; and each group
   alone in a bare interpreter);
7. the fixed costs: what does not depend on the servers, ranked.

    .venv/bin/python bench/profile_check.py [--runs 5] [--servers auto|real|scripted]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_peers import (  # noqa: E402
    Servers,
    check_args,
    real_servers,
    real_servers_missing,
    scripted_servers,
)
from procs import Launcher, bench_env, compile_package, maildiag_entry  # noqa: E402

TRACE = str(HERE / "trace_check.py")
IMPORT_MACHINERY = {"<built-in method builtins.exec>", "<built-in method builtins.__import__>"}
SERVICES = ("smtp", "imap", "pop3")
MAIN_THREAD = "MainThread"
# groups imported alone in a bare interpreter for section 6
ALONE = [
    ("ssl + socket + threading", ["ssl", "socket", "threading"]),
    ("yaml", ["yaml"]),
    ("dns.resolver", ["dns.resolver"]),
    ("cryptography.x509", ["cryptography.x509"]),
    ("maildiag.cli (and all it imports)", ["maildiag.cli"]),
]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- 1-3: the timeline ------------------------------------------------------------------------


def run_timeline(args: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    spawned = time.time()
    subprocess.run(
        [sys.executable, TRACE, "timeline", str(out), "--", *args],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    reaped = time.time()
    first, second = out.read_text().splitlines()[:2]
    data: dict[str, Any] = json.loads(first)
    written = json.loads(second)["wall_written"]
    data["process_s"] = reaped - spawned
    data["startup_s"] = data["wall_start"] - spawned
    data["exit_s"] = reaped - written
    return data


def thread_kind(name: str) -> str:
    """``maildiag:smtp://127.0.0.1:587/starttls`` -> ``smtp session``."""
    m = re.match(r"maildiag:(\w+)://", name)
    return f"{m.group(1)} session" if m else name


def timeline_tables(runs: list[dict[str, Any]], baseline_s: float) -> tuple[str, dict[str, float]]:
    out = io.StringIO()
    w = out.write
    process = median([r["process_s"] for r in runs])
    startup = median([r["startup_s"] for r in runs])
    main = median([r["main_s"] for r in runs])
    exit_s = median([r["exit_s"] for r in runs])
    w("### 1. The process (ms, medians)\n\n")
    w("| spawn to reap | interpreter start | main() | exit | `python -c pass` |\n")
    w("| ---: | ---: | ---: | ---: | ---: |\n")
    w(f"| {ms(process)} | {ms(startup)} | {ms(main)} | {ms(exit_s)} | {ms(baseline_s)} |\n\n")
    w("(interpreter start: spawn to the first line of bench/trace_check.py; exit: main() done\n")
    w("to the process reaped, ending as the console entry does: flush, then os._exit. Traced\n")
    w("runs: a wrapper per call.)\n\n")

    excl: dict[str, list[float]] = defaultdict(list)
    incl: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[int]] = defaultdict(list)
    for r in runs:
        main_thread = next(t for t in r["threads"] if t["name"] == MAIN_THREAD)
        for cat in set(main_thread["excl"]) | set(excl):
            excl[cat].append(main_thread["excl"].get(cat, 0.0))
            incl[cat].append(main_thread["incl"].get(cat, 0.0))
            calls[cat].append(main_thread["calls"].get(cat, 0))
    w("### 2. The main thread's wall time (ms, medians; exclusive adds up to main())\n\n")
    w("| booked to | exclusive | inclusive | calls |\n| --- | ---: | ---: | ---: |\n")
    for cat in sorted(excl, key=lambda c: -median(excl[c])):
        w(
            f"| {cat} | {ms(median(excl[cat]))} | {ms(median(incl[cat]))} | "
            f"{statistics.median(calls[cat]):.0f} |\n"
        )
    w("\n")

    w("### 3. The session threads (ms, medians)\n\n")
    w("| thread | starts at | lives | where the time goes (exclusive) |\n")
    w("| --- | ---: | ---: | --- |\n")
    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        for t in r["threads"]:
            if t["name"] != MAIN_THREAD:
                kinds[thread_kind(t["name"])].append(t)
    for kind, threads in sorted(kinds.items()):
        life = median([t["life"] for t in threads])
        cats: dict[str, list[float]] = defaultdict(list)
        for t in threads:
            booked = sum(t["excl"].values())
            for cat, v in t["excl"].items():
                cats[cat].append(v)
            cats["other Python work, or waiting for the GIL or an import lock"].append(
                max(0.0, t["life"] - booked)
            )
        parts = sorted(((median(v), c) for c, v in cats.items()), reverse=True)
        listing = ", ".join(f"{c} {ms(v)}" for v, c in parts if v >= 0.0005)
        w(f"| {kind} | {ms(median([t['start'] for t in threads]))} | {ms(life)} | {listing} |\n")
    w("\n")
    w("Inside the imports, by the module that asked (ms, calls; medians):\n\n")
    w("| what | module | ms | calls |\n| --- | --- | ---: | ---: |\n")
    for cat in ("dataclass creation", "enum class creation", "regex compile"):
        per: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for r in runs:
            for module, (secs, n) in r.get("detail", {}).get(cat, {}).items():
                per[module].append((secs, n))
        ranked = sorted(per.items(), key=lambda kv: -median([x[0] for x in kv[1]]))
        for module, values in ranked[:6]:
            secs = median([x[0] for x in values])
            n = statistics.median([x[1] for x in values])
            w(f"| {cat} | {module} | {ms(secs)} | {n:.0f} |\n")
        rest = ranked[6:]
        if rest:
            secs = sum(median([x[0] for x in v]) for _, v in rest)
            w(f"| {cat} | ({len(rest)} more modules) | {ms(secs)} | |\n")
    w("\n")
    summary = {
        "process": process,
        "startup": startup,
        "main": main,
        "exit": exit_s,
        "baseline": baseline_s,
    }
    for cat, values in incl.items():
        summary[f"main incl: {cat}"] = median(values)
    for cat, values in excl.items():
        summary[f"main excl: {cat}"] = median(values)
    all_threads: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        totals: dict[str, float] = defaultdict(float)
        for t in r["threads"]:
            for cat, v in t["excl"].items():
                totals[cat] += v
        for cat in {c for run in runs for t in run["threads"] for c in t["excl"]}:
            all_threads[cat].append(totals.get(cat, 0.0))
    for cat, values in all_threads.items():
        summary[f"all excl: {cat}"] = median(values)
    return out.getvalue(), summary


# -- 4: -X importtime -------------------------------------------------------------------------

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def run_importtime(args: list[str], env: dict[str, str]) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) in load order."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "maildiag", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            rows.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    return rows


def origin_of(top: str) -> str:
    if top == "maildiag":
        return "maildiag"
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return "?"
    where = (spec.origin or "") if spec else ""
    if "site-packages" in where:
        return "third party"
    return "stdlib"


def importtime_tables(runs: list[list[tuple[str, int, int, int]]], top: int) -> tuple[str, dict]:
    selfs: dict[str, list[int]] = defaultdict(list)
    cums: dict[str, list[int]] = defaultdict(list)
    depth: dict[str, int] = {}
    totals = []
    for rows in runs:
        totals.append(sum(r[1] for r in rows))
        for name, self_us, cum_us, d in rows:
            selfs[name].append(self_us)
            cums[name].append(cum_us)
            depth.setdefault(name, d)
    out = io.StringIO()
    w = out.write
    total = median([float(t) for t in totals])
    startup = {n for n in selfs if n in STARTUP_MODULES}
    w(f"### 4. `python -X importtime` of the check ({len(runs)} runs, medians)\n\n")
    w(f"Total: {total / 1000:.0f} ms over {len(selfs)} modules (the sum of every module's own\n")
    w(f"time; of it {sum(median(selfs[n]) for n in startup) / 1000:.0f} ms is what\n")
    w("`python -c pass` imports too).\n\n")
    w(f"Top {top} by cumulative time:\n\n")
    w("| module | cumulative ms | self ms | imported at depth |\n")
    w("| --- | ---: | ---: | ---: |\n")
    ranked = sorted(cums, key=lambda n: -median(cums[n]))[:top]
    for name in ranked:
        w(
            f"| {name} | {median(cums[name]) / 1000:.1f} | {median(selfs[name]) / 1000:.1f} | "
            f"{depth[name]} |\n"
        )
    own = sorted(
        (n for n in selfs if n.split(".")[0] == "maildiag"), key=lambda n: -median(selfs[n])
    )
    w("\nmaildiag's own modules by their own time (top 12):\n\n")
    w("| module | self ms |\n| --- | ---: |\n")
    for name in own[:12]:
        w(f"| {name} | {median(selfs[name]) / 1000:.1f} |\n")
    by_top: dict[str, float] = defaultdict(float)
    for name, values in selfs.items():
        by_top[name.split(".")[0]] += median(values)
    w("\nBy top-level package (sum of the modules' own times):\n\n")
    w("| package | ms | from |\n| --- | ---: | --- |\n")
    packages = sorted(by_top.items(), key=lambda kv: -kv[1])
    for name, us in packages[:25]:
        w(f"| {name} | {us / 1000:.1f} | {origin_of(name)} |\n")
    rest = sum(us for _, us in packages[25:])
    w(f"| ({len(packages) - 25} more) | {rest / 1000:.1f} | |\n\n")
    return out.getvalue(), {"total": total / 1e6, **{k: v / 1e6 for k, v in by_top.items()}}


STARTUP_MODULES: set[str] = set()


def startup_modules(env: dict[str, str]) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {m.group(4) for line in proc.stderr.splitlines() if (m := IMPORT_LINE.match(line))}


# -- 5: cProfile ------------------------------------------------------------------------------


def cprofile_table(args: list[str], env: dict[str, str], tmp: Path, top: int) -> str:
    out = tmp / "check.pstats"
    subprocess.run(
        [sys.executable, TRACE, "cprofile", str(out), "--", *args],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    stats = pstats.Stats(str(out))
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.startswith("<frozen") or func in IMPORT_MACHINERY or func == "<module>":
            continue
        where = f"{Path(filename).name}:{line}({func})" if line else func
        rows.append((cumtime, tottime, ncalls, where))
    rows.sort(reverse=True)
    body = "\n".join(f"{cum:8.3f} {tot:8.3f} {n:7d}  {where}" for cum, tot, n, where in rows[:top])
    body = " cumtime  tottime   calls  function\n" + body
    return (
        f"### 5. cProfile, every thread of one run, top {top} by cumulative time\n\n"
        "(import machinery and module bodies left out: section 4 has them. cProfile's own\n"
        "overhead inflates Python-heavy code several times; read the order, not the seconds.)\n\n"
        "```\n" + body + "\n```\n\n"
    )


# -- 6: memory --------------------------------------------------------------------------------


def rss_tables(
    args: list[str], env: dict[str, str], tmp: Path, run: Launcher, modules: list[str]
) -> tuple[str, dict]:
    out = tmp / "rss.json"
    names = tmp / "modules.txt"
    names.write_text("\n".join(modules) + "\n")
    subprocess.run(
        [sys.executable, TRACE, "rss", str(out), "--", *args],
        env={**env, "TRACE_MODULES_FILE": str(names)},
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    data = json.loads(out.read_text())
    peak = run.measure([*maildiag_entry(), *args]).maxrss_kb
    w = io.StringIO()
    w.write("### 6. Peak RSS and what the imports add (MB)\n\n")
    w.write(
        f"Peak RSS of the check as a user runs it (wait4): {peak / 1024:.1f} MB; with every\n"
        f"group below imported first, in one process: {data['peak_kb'] / 1024:.1f} MB.\n\n"
    )
    w.write("| step, in this order, one process | RSS after | added |\n| --- | ---: | ---: |\n")
    before = 0
    added = {}
    for step in data["steps"]:
        delta = step["rss_kb"] - before if before else 0
        note = f" ({step['error']})" if step.get("error") else ""
        w.write(
            f"| {step['step']}{note} | {step['rss_kb'] / 1024:.1f} | "
            f"{'+' + format(delta / 1024, '.1f') if before else ''} |\n"
        )
        added[step["step"]] = delta / 1024
        before = step["rss_kb"]
    w.write("\n| imported alone into a bare interpreter | adds |\n| --- | ---: |\n")
    for label, modules in ALONE:
        path = tmp / "alone.json"
        subprocess.run(
            [sys.executable, TRACE, "alone", str(path), "--", *modules],
            env=env,
            check=True,
            timeout=60,
        )
        a = json.loads(path.read_text())
        mb = (a["after_kb"] - a["before_kb"]) / 1024
        added[f"alone: {label}"] = mb
        w.write(f"| {label} | {mb:.1f} |\n")
    w.write("\n")
    return w.getvalue(), {"peak_mb": peak / 1024, **added}


# -- 7: the fixed costs -----------------------------------------------------------------------


def fixed_costs(tl: dict[str, float], imports: dict[str, float], rss: dict[str, float]) -> str:
    """Everything that costs the same whatever the servers do, largest first."""

    def imp(*tops: str) -> float:
        return sum(imports.get(t, 0.0) for t in tops)

    rows = [
        (
            "interpreter start + exit beyond `python -c pass`",
            tl["startup"] + tl["exit"] - tl["baseline"],
            "",
        ),
        ("imports: argparse", imp("argparse"), ""),
        ("imports: cryptography", imp("cryptography"), "cryptography.x509"),
        ("imports: dnspython", imp("dns"), "dns.resolver"),
        ("imports: yaml", imp("yaml", "_yaml"), "yaml"),
        ("imports: maildiag's own modules", imp("maildiag"), ""),
        (
            "TLS: certifi's CA bundle loaded (the whole file)",
            tl.get("all excl: CA load: certifi's bundle", 0.0),
            "",
        ),
        (
            "TLS: certifi's hashed directory found and set (maildiag.castore)",
            tl.get("all excl: maildiag: certifi's hashed directory found (or built)", 0.0)
            + tl.get(
                "all excl: CA load: certifi's hashed directory (CAs read during the handshake)", 0.0
            )  # fmt: skip
            + tl.get("all excl: CA load: certifi's CAs left out of the hashed directory", 0.0),
            "",
        ),
        (
            "TLS: the system trust store loaded (ssl.create_default_context)",
            tl.get("all excl: CA load: the system trust store (ssl.create_default_context)", 0.0),
            "",
        ),
        (
            "TLS: --ca-file loaded",
            tl.get("all excl: CA load: another file (--ca-file)", 0.0),
            "",
        ),
        ("dataclass creation (in imports)", tl.get("all excl: dataclass creation", 0.0), ""),
        ("enum class creation (in imports)", tl.get("all excl: enum class creation", 0.0), ""),
        ("regex compiles", tl.get("all excl: regex compile", 0.0), ""),
        ("rule base load (all threads)", tl.get("all excl: maildiag: rule base load", 0.0), ""),
        (
            "provider database load (from its cache; YAML when the files changed)",
            tl.get("main incl: maildiag: provider database load", 0.0),
            "",
        ),
        ("thread starts", tl.get("main incl: thread start", 0.0), ""),
        ("x509 parsing (all threads)", tl.get("all excl: x509 parsing (cryptography)", 0.0), ""),
        ("sleeps (all threads)", tl.get("all excl: sleep", 0.0), ""),
        ("report rendering", tl.get("main incl: maildiag: report rendering", 0.0), ""),
        ("diagnosis", tl.get("main incl: maildiag: diagnosis", 0.0), ""),
    ]
    alone = {
        "cryptography.x509": rss.get("alone: cryptography.x509", 0.0),
        "dns.resolver": rss.get("alone: dns.resolver", 0.0),
        "yaml": rss.get("alone: yaml", 0.0),
    }
    out = io.StringIO()
    out.write("### 7. Fixed costs, largest first (ms from sections 1, 2 and 4; MB alone)\n\n")
    out.write("| fixed cost | ms | MB |\n| --- | ---: | ---: |\n")
    for name, secs, rss_key in sorted(rows, key=lambda r: -r[1]):
        mb = f"{alone[rss_key]:.1f}" if rss_key in alone else ""
        out.write(f"| {name} | {secs * 1000:.0f} | {mb} |\n")
    out.write("\n")
    return out.getvalue()


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(kind: str) -> Iterator[Servers]:
    use_real = kind == "real" or (kind == "auto" and real_servers_missing() is None)
    with real_servers() if use_real else scripted_servers(one_piece=True) as s:
        yield s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per measurement")
    parser.add_argument("--top", type=int, default=25, help="rows of the import and cProfile lists")
    parser.add_argument("--servers", choices=("auto", "real", "scripted"), default="auto")
    args = parser.parse_args(argv)
    env = bench_env()
    compile_package(env)
    STARTUP_MODULES.update(startup_modules(env))
    one, five, _ = os.getloadavg()
    with servers(args.servers) as s, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        check = check_args(s, SERVICES)
        print(f"## Where the time goes: one whole-mailbox check ({args.runs} runs each)\n")
        print(f"servers: {s.kind}; load average {one:.2f} (1 min), {five:.2f} (5 min)\n")
        print(f"command: `maildiag {' '.join(check)}`\n")
        with Launcher(env) as run:
            run.measure([*maildiag_entry(), *check])  # warm the page cache and the rule cache
            base_runs = [run.measure([sys.executable, "-c", "pass"]) for _ in range(5)]
            plain_runs = [run.measure([*maildiag_entry(), *check]) for _ in range(args.runs)]
            baseline = median([m.seconds for m in base_runs])
            plain = median([m.seconds for m in plain_runs])
            cpu = median([m.cpu_seconds for m in plain_runs])
            base_cpu = median([m.cpu_seconds for m in base_runs])
            print(
                f"Untraced, as a user runs it: {ms(plain)} ms wall, {ms(cpu)} ms CPU; "
                f"`python -c pass`: {ms(baseline)} ms wall, {ms(base_cpu)} ms CPU"
            )
            print()
            runs = [run_timeline(check, env, tmp / f"tl{i}.json") for i in range(args.runs)]
            text, tl = timeline_tables(runs, baseline)
            print(text)
            imp_runs = [run_importtime(check, env) for _ in range(args.runs)]
            text, imports = importtime_tables(imp_runs, args.top)
            print(text)
            print(cprofile_table(check, env, tmp, args.top))
            modules = [name for name, *_ in imp_runs[0]]
            text, rss = rss_tables(check, env, tmp, run, modules)
            print(text)
        print(fixed_costs(tl, imports, rss))
    one, five, _ = os.getloadavg()
    print(f"load average at the end: {one:.2f} (1 min), {five:.2f} (5 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
