"""How far one `maildiag exporter` goes on one machine (issue 19 item 4).

    .venv/bin/python bench/bench_exporter.py [--sizes 100,300,1000] [--delays 0,0.2]
                                             [--concurrency 64] [--per-server 1] [--quick]

For each size N and reply delay D: a peer process serves IMAP on implicit TLS for N mailboxes,
`--per-server` of them on each server (each server its own loopback address 127.1.x.y with its
own trustme certificate), answering every line after D seconds; an exporter (`maildiag
exporter`, a subprocess, as deployed) gets a targets file of the N mailboxes, each logging in
with a password from its environment; then a load generator plays Prometheus: one scrape of
every target, in an order that mixes the servers (Prometheus spreads its targets over the
interval), `--concurrency` at a time (the exporter's max_probes is the same), each with a 30 s
scrape timeout. With several mailboxes on a server, the exporter's per-host cap (2 connections
at once to one server and service) bounds what that server sees, and the rest of the probes of
that server wait for it.

Measured: probes per second over the whole round (N / wall time), p50 and p99 of a probe's
latency as the scraper saw it, probes that did not succeed, the exporter's peak RSS (VmHWM),
peak open file descriptors and threads (sampled every 20 ms from /proc), its CPU seconds per
probe, its start time and its RSS at rest with N targets loaded. A warm-up probe runs before each
round: the first probe of a process pays its imports.

The peers run in their own process (asyncio, so a thousand slow connections cost nothing), and
the load generator in this one: on a 2-CPU machine the three share the CPUs, as they would if
Prometheus ran beside the exporter. Read the load average printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "bench-exporter-secret"
PORT = 10993
SCRAPE_TIMEOUT = "30"


def host_ip(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


# -- the peers: IMAP on implicit TLS, each line answered after a delay -------------------------


async def _imap_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    async def say(*lines: str) -> None:
        if delay:
            await asyncio.sleep(delay)
        writer.write("".join(f"{line}\r\n" for line in lines).encode())
        await writer.drain()

    try:
        await say("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] bench IMAP ready")
        while True:
            raw = await asyncio.wait_for(reader.readline(), 30)
            if not raw or len(raw) > 8192:
                return
            tag, _, rest = raw.decode("utf-8", "replace").strip().partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                await say("* CAPABILITY IMAP4rev1 AUTH=PLAIN", f"{tag} OK done")
            elif command == "LOGIN":
                ok = args.split(" ", 1)[-1].strip('"') == PASSWORD
                await say(f"{tag} OK Logged in" if ok else f"{tag} NO [AUTHENTICATIONFAILED] no")
            elif command == "LOGOUT":
                await say("* BYE bye", f"{tag} OK LOGOUT completed")
                return
            else:
                await say(f"{tag} BAD unknown command")
    except (TimeoutError, OSError, UnicodeError):
        return
    finally:
        writer.close()


async def _serve_peers(hosts: int, delay: float, directory: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    servers = []
    for index in range(hosts):
        ip = host_ip(index)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(ip).configure_cert(ctx)
        servers.append(
            await asyncio.start_server(
                lambda r, w: _imap_session(r, w, delay), ip, PORT, ssl=ctx, backlog=512
            )
        )
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def run_peers(hosts: int, delay: float, directory: Path) -> None:
    asyncio.run(_serve_peers(hosts, delay, directory))


# -- the exporter under test --------------------------------------------------------------------


def targets_file(size: int, directory: Path, per_server: int = 1) -> Path:
    import yaml

    doc = {
        "defaults": {
            "clock": False,
            "timeout": 10,
            "password_env": "BENCH_PASSWORD",
            "ca_file": str(directory / "ca.pem"),
        },
        "targets": [
            {
                "address": f"user{i}@host{i // per_server}.example.test",
                "name": f"mbox{i}",
                "imap": f"{host_ip(i // per_server)}:{PORT}/ssl",
                "only": "imap",
            }
            for i in range(size)
        ],
    }
    path = directory / "exporter.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Proc:
    pid: int
    peak_fds: int = 0
    peak_threads: int = 0

    def status(self) -> dict[str, str]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def kib(self, field: str) -> int:
        return int(self.status()[field].split()[0])

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        self.peak_fds = max(self.peak_fds, len(os.listdir(f"/proc/{self.pid}/fd")))
        self.peak_threads = max(self.peak_threads, int(self.status()["Threads"]))


@contextmanager
def sampling(proc: Proc, every: float = 0.02) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                proc.sample()
            except (OSError, KeyError, ValueError):
                pass
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def probe(url: str) -> tuple[float, bool, int]:
    """(latency, probe_success, HTTP status) of one scrape."""
    request = urllib.request.Request(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        return time.monotonic() - started, False, exc.code
    except OSError:
        return time.monotonic() - started, False, 0
    found = re.search(r"^maildiag_probe_success (\S+)", body, re.M)
    return time.monotonic() - started, bool(found and float(found.group(1)) == 1), status


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def round_of(size: int, delay: float, concurrency: int, per_server: int) -> dict[str, object]:
    import random

    with tempfile.TemporaryDirectory(prefix="maildiag-bench-exporter-") as tmp:
        directory = Path(tmp)
        hosts = (size + per_server - 1) // per_server
        peers = subprocess.Popen(
            [sys.executable, __file__, "--peer", str(hosts), str(delay), str(directory)],
            stdout=subprocess.PIPE,
            text=True,
        )
        exporter = None
        try:
            assert peers.stdout is not None and peers.stdout.readline().strip() == "ready"
            config = targets_file(size, directory, per_server)
            env = {**os.environ, "BENCH_PASSWORD": PASSWORD, "LANG": "C.UTF-8"}
            started = time.monotonic()
            exporter = subprocess.Popen(
                [
                    *maildiag(),
                    "exporter",
                    "--config",
                    str(config),
                    "--listen",
                    "127.0.0.1:0",
                    "--max-probes",
                    str(concurrency),
                ],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert exporter.stderr is not None
            line = exporter.stderr.readline()
            found = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
            if not found:
                raise RuntimeError(f"the exporter did not start: {line}")
            startup = time.monotonic() - started
            base = f"http://{found.group(1)}/probe?target="
            proc = Proc(exporter.pid)
            rest_kib = proc.kib("VmRSS")
            warm = probe(base + "mbox0")
            if not warm[1]:
                raise RuntimeError(f"the warm-up probe failed: {warm}")
            order = list(range(size))
            random.Random(19).shuffle(order)
            cpu_before = proc.cpu_seconds()
            with sampling(proc), ThreadPoolExecutor(concurrency) as pool:
                t0 = time.monotonic()
                results = list(pool.map(probe, [f"{base}mbox{i}" for i in order]))
                wall = time.monotonic() - t0
            cpu = proc.cpu_seconds() - cpu_before
            peak_kib = proc.kib("VmHWM")
        finally:
            for p in (exporter, peers):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
    latencies = [r[0] for r in results]
    failed = [r for r in results if not r[1]]
    return {
        "targets": size,
        "hosts": hosts,
        "delay_s": delay,
        "concurrency": concurrency,
        "probes_per_s": round(size / wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "failed": len(failed),
        "statuses": sorted({r[2] for r in failed}),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rest_rss_mib": round(rest_kib / 1024, 1),
        "peak_fds": proc.peak_fds,
        "peak_threads": proc.peak_threads,
        "cpu_ms_per_probe": round(cpu / size * 1000, 1),
        "startup_s": round(startup, 2),
        "wall_s": round(wall, 2),
    }


def maildiag() -> list[str]:
    script = Path(sys.executable).with_name("maildiag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "maildiag"]


COLUMNS = (
    ("targets", "targets"),
    ("hosts", "hosts"),
    ("delay_s", "reply delay s"),
    ("concurrency", "concurrency"),
    ("probes_per_s", "probes/s"),
    ("p50_s", "p50 s"),
    ("p99_s", "p99 s"),
    ("failed", "failed"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("rest_rss_mib", "RSS at rest MiB"),
    ("peak_fds", "peak fds"),
    ("peak_threads", "peak threads"),
    ("cpu_ms_per_probe", "CPU ms/probe"),
    ("startup_s", "start s"),
)


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        run_peers(int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--delays", default="0,0.2")
    parser.add_argument("--concurrency", default="64", help="one or more, comma-separated")
    parser.add_argument("--per-server", default="1", help="mailboxes on each server; a list")
    parser.add_argument("--quick", action="store_true", help="100 targets, both delays")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    delays = [float(d) for d in args.delays.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    sharing = [int(n) for n in args.per_server.split(",")]
    rows = []
    for per_server in sharing:
        for delay in delays:
            for size in sizes:
                for concurrency in levels:
                    row = round_of(size, delay, concurrency, per_server)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {os.cpu_count()} CPUs")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 1 if any(row["failed"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
