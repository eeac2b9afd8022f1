"""Benchmarks of ``maildiag check`` on loopback peers.

slow:     SMTP, IMAP and POP3 peers that sleep 0.2 s before every line they send. The full check of
          all three must take about as long as the slowest service checked alone (target
          full / slowest <= 1.2): the services are probed concurrently, not one after another.
filtered: every port filtered (connect times out; see tests/peers.FilteredPort), the clock server
          and the resolver silent. ``maildiag check --timeout T`` must end within T + 1 s (one
          timeout, not a multiple of it).

The slow benchmark runs the real CLI in-process (``maildiag.__main__.main``), so interpreter start
does not dilute the ratio; the filtered one runs ``python -m maildiag`` as a user would and times
the whole process. ``python bench/bench_check.py`` runs both; bench/run.py runs every benchmark.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchpeers import FilteredPort, slow_imap, slow_pop3, slow_smtp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = "bench@example.test"
DELAY = 0.2


@dataclass
class Result:
    name: str
    value: float  # a ratio, or seconds
    target: float
    unit: str  # "ratio" or "s"
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value <= self.target


def _silent_udp() -> socket.socket:
    """A bound UDP port that never answers: a DNS or NTP server that is not there."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_cli_inprocess(args: list[str]) -> tuple[int, str, str, float]:
    from maildiag.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # pragma: no cover - the CLI returns its code
            code = int(exc.code or 0)
    return int(code), out.getvalue(), err.getvalue(), time.perf_counter() - started


def _check_args(servers: dict[str, int], only: list[str], timeout: float) -> list[str]:
    args = [
        "check",
        ADDRESS,
        "--no-clock",
        "--json",
        "--timeout",
        f"{timeout:g}",
        "--only",
        ",".join(only),
    ]
    for svc, port in servers.items():
        if svc in only:
            args += [f"--{svc}", f"127.0.0.1:{port}/plain"]
    return args


def _statuses(out: str) -> dict[str, str]:
    report = json.loads(out)
    return {c["id"]: c["status"] for c in report["checks"]}


def bench_slow(delay: float = DELAY, timeout: float = 10.0, rounds: int = 2) -> Result:
    """Each measurement is the best of ``rounds``: noise on a busy machine only adds time."""
    peers = {"smtp": slow_smtp(delay), "imap": slow_imap(delay), "pop3": slow_pop3(delay)}
    ports = {svc: p.port for svc, p in peers.items()}
    try:
        # warm imports and the rule cache once, untimed
        run_cli_inprocess(_check_args(ports, ["imap"], timeout))
        singles: dict[str, float] = {}
        full = float("inf")
        statuses: dict[str, str] = {}
        for _ in range(rounds):
            for svc in ports:
                code, out, err, secs = run_cli_inprocess(_check_args(ports, [svc], timeout))
                _require_report(code, out, err, f"--only {svc}")
                singles[svc] = min(secs, singles.get(svc, secs))
            code, out, err, secs = run_cli_inprocess(_check_args(ports, list(ports), timeout))
            statuses = _require_report(code, out, err, "all three")
            full = min(full, secs)
    finally:
        for p in peers.values():
            p.close()
    slowest = max(singles, key=lambda s: singles[s])
    ratio = full / singles[slowest]
    timed_out = sorted(c for c, s in statuses.items() if s == "fail")
    detail = f"full {full:.2f}s vs slowest alone ({slowest}) {singles[slowest]:.2f}s; " + ", ".join(
        f"{s} {t:.2f}s" for s, t in singles.items()
    )
    if timed_out:
        detail += f"; failed checks: {', '.join(timed_out)}"
    return Result(
        "check: 3 services / slowest alone (0.2 s per line)",
        ratio,
        1.2,
        "ratio",
        detail,
        {"full_s": full, "singles_s": singles},
    )


def _require_report(code: int, out: str, err: str, what: str) -> dict[str, str]:
    try:
        return _statuses(out)
    except (ValueError, KeyError):
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"check ({what}) printed no JSON report (exit {code}): {last}") from None


def bench_filtered(timeout: float = 2.0) -> Result:
    ports = [FilteredPort() for _ in range(3)]
    dns, ntp = _silent_udp(), _silent_udp()
    try:
        if not all(p.verify() for p in ports):
            raise RuntimeError("this kernel does not drop SYNs on a full accept queue")
        args = [
            sys.executable,
            "-m",
            "maildiag",
            "check",
            ADDRESS,
            "--json",
            "--timeout",
            f"{timeout:g}",
            "--smtp",
            f"127.0.0.1:{ports[0].port}/ssl",
            "--imap",
            f"127.0.0.1:{ports[1].port}/starttls",
            "--pop3",
            f"127.0.0.1:{ports[2].port}",
            "--resolver",
            f"127.0.0.1:{dns.getsockname()[1]}",
            "--time-server",
            f"127.0.0.1:{ntp.getsockname()[1]}",
        ]
        started = time.perf_counter()
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout * 20 + 30,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        elapsed = time.perf_counter() - started
    finally:
        for p in ports:
            p.close()
        dns.close()
        ntp.close()
    detail = f"{elapsed:.2f}s with --timeout {timeout:g} (exit {proc.returncode})"
    try:
        statuses = _statuses(proc.stdout)
    except (ValueError, KeyError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"no JSON report after {elapsed:.2f}s (exit {proc.returncode}): {last}"
        ) from None
    connect = {c: s for c, s in statuses.items() if c.endswith(".connect")}
    detail += "; " + ", ".join(f"{c}={s}" for c, s in sorted(connect.items()))
    return Result(
        f"check, every port filtered: seconds over --timeout {timeout:g}",
        elapsed - timeout,
        1.0,
        "s",
        detail,
        {"elapsed_s": elapsed},
    )


def main() -> int:
    failed = 0
    for bench in (bench_slow, bench_filtered):
        try:
            r = bench()
        except Exception as exc:  # noqa: BLE001 - a benchmark that cannot run is reported
            print(f"{bench.__name__}: could not run: {exc}")
            failed += 1
            continue
        print(
            f"{'ok ' if r.ok else 'OVER'} {r.name}: {r.value:.2f} {r.unit} "
            f"(target <= {r.target:g})\n     {r.detail}"
        )
        failed += not r.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
