"""maildiag side by side with the tools people run today, on the same loopback servers.

The peers (install them with ``bash bench/install-peers.sh``): the Nagios plugins check_smtp,
check_imap and check_pop (Debian monitoring-plugins-basic), check_ssl_cert
(monitoring-plugins-contrib), swaks, and sslyze (in bench/.peers-venv). Without them this prints
one line saying what is missing and exits 0.

Servers: the real Postfix and Dovecot of the integration suite (tests/integration/servers.py:
submission with STARTTLS required, IMAPS, POP3S, a trustme CA, dnsmasq as the resolver) when they
are installed and we are root — they are what users' programs and the plugins meet, they answer
at once, and being C daemons they take no CPU from the Python under test. Otherwise, and always
for the "one piece / line by line" comparison, the scripted servers of bench/benchpeers.py
(``fast_servers``): Python threads in this process, multi-line replies written in one piece (as
Postfix and Dovecot do) or one write a line.

Every pair runs interleaved, A then B, for ``--rounds`` rounds after one untimed warm-up of each;
a round's A and B meet the same servers at the same load. Each run is a fresh process timed from
spawn to reap, its CPU time and peak RSS read from ``os.wait4``. The table gives the medians, the
ratio of the medians (maildiag / peer), the 25th-75th percentile of the per-round ratios, and the
CPU times (user + system): on a busy machine wall time stretches with the load, CPU time much
less, so its ratio is the steadier one. The targets are
issue 17's: a whole-mailbox check no slower than the three plugins one after another, one
STARTTLS port within 2x check_smtp, a cold explain within 3x ``python -c pass``, a whole-mailbox
check within 35 MB of peak RSS. Exit status 1 when a target is missed.

    .venv/bin/python bench/bench_peers.py                 # everything, about 6 minutes
    .venv/bin/python bench/bench_peers.py --quick         # 3 rounds, 1 for the filtered ports
    .venv/bin/python bench/bench_peers.py --only mailbox,explain --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from benchpeers import FilteredPort, fast_servers  # noqa: E402
from procs import Launcher, Measured, RunFailed, bench_env, compile_package, maildiag_entry  # noqa: E402

PLUGINS = Path("/usr/lib/nagios/plugins")
SWAKS = Path("/usr/bin/swaks")
SSLYZE = HERE / ".peers-venv" / "bin" / "sslyze"
ADDRESS = "bench@example.test"
EXPLAIN_TEXT = "535 5.7.8 Error: authentication failed: authentication failure"
HOST = "127.0.0.1"
FILTERED_TIMEOUT = 3
GROUPS = ("mailbox", "smtp", "cert", "filtered", "explain", "pieces")


@dataclass(frozen=True)
class Servers:
    kind: str
    submission: int  # SMTP, STARTTLS required (587)
    imaps: int  # IMAP, implicit TLS (993)
    pop3s: int  # POP3, implicit TLS (995)
    ca_pem: Path
    resolver: str  # HOST:PORT of a DNS server on loopback (maildiag asks it nothing for IPs)


@dataclass(frozen=True)
class Pair:
    work: str
    peer: str
    a: Callable[[], Measured]  # maildiag
    b: Callable[[], Measured]  # the peer
    target: float | None = None  # ratio maildiag / peer
    rss_target_mb: float | None = None  # maildiag's peak RSS


@dataclass
class PairResult:
    pair: Pair
    a: list[Measured] = field(default_factory=list)
    b: list[Measured] = field(default_factory=list)

    @property
    def a_median(self) -> float:
        return statistics.median(m.seconds for m in self.a)

    @property
    def b_median(self) -> float:
        return statistics.median(m.seconds for m in self.b)

    @property
    def ratio(self) -> float:
        return self.a_median / self.b_median

    @property
    def spread(self) -> tuple[float, float]:
        """25th and 75th percentile of the per-round ratios."""
        ratios = sorted(x.seconds / y.seconds for x, y in zip(self.a, self.b, strict=True))
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q = statistics.quantiles(ratios, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def cpu_ratio(self) -> float:
        """Median CPU seconds (user + system), maildiag / peer: what the load cannot stretch."""
        a, b = self.cpu_medians
        return a / b if b else float("inf")

    @property
    def cpu_medians(self) -> tuple[float, float]:
        return (
            statistics.median(m.cpu_seconds for m in self.a),
            statistics.median(m.cpu_seconds for m in self.b),
        )

    @property
    def a_rss(self) -> float:
        return statistics.median(m.rss_mb for m in self.a)

    @property
    def b_rss(self) -> float:
        return statistics.median(m.rss_mb for m in self.b)

    @property
    def misses(self) -> list[str]:
        out = []
        if self.pair.target is not None and self.ratio > self.pair.target:
            out.append(f"ratio {self.ratio:.2f} > {self.pair.target:g}")
        if self.pair.rss_target_mb is not None and self.a_rss > self.pair.rss_target_mb:
            out.append(f"RSS {self.a_rss:.1f} MB > {self.pair.rss_target_mb:g} MB")
        return out


# -- peers ------------------------------------------------------------------------------------


def missing_peers(plugins: Path = PLUGINS) -> list[str]:
    wanted = [plugins / n for n in ("check_smtp", "check_imap", "check_pop", "check_ssl_cert")]
    wanted += [SWAKS, SSLYZE]
    return [str(p) for p in wanted if not os.access(p, os.X_OK)]


def peer_versions(plugins: Path) -> list[str]:
    def first_line(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{cmd[0]}: {exc}"
        return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0].strip()

    return [
        first_line([*maildiag_entry(), "--version"]),
        first_line([str(plugins / "check_smtp"), "-V"]),
        first_line([str(plugins / "check_ssl_cert"), "--version"]),
        first_line([str(SWAKS), "--version"]),
        "sslyze " + first_line([str(SSLYZE.with_name("python")), "-c", _SSLYZE_VERSION]),
    ]


_SSLYZE_VERSION = "import importlib.metadata as m; print(m.version('sslyze'))"


# -- servers ----------------------------------------------------------------------------------


def real_servers_missing() -> str | None:
    from integration.servers import missing_binaries

    missing = missing_binaries()
    if missing:
        return "not installed: " + ", ".join(missing) + " (scripts/integration-deps.sh)"
    if os.geteuid() != 0:
        return "Postfix's master must be started as root"
    return None


@contextlib.contextmanager
def real_servers() -> Iterator[Servers]:
    from integration.servers import MailServers, new_root

    mail = MailServers(new_root())
    try:
        mail.start()
        p = mail.ports
        versions = _daemon_versions()
        yield Servers(
            f"Postfix and Dovecot (tests/integration/servers.py; {versions})",
            p.submission,
            p.imaps,
            p.pop3s,
            mail.ca_pem,
            mail.resolver,
        )
    finally:
        mail.stop()
        mail.cleanup()


def _daemon_versions() -> str:
    out = []
    for cmd in (
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        ["/usr/sbin/dovecot", "--version"],
    ):
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            continue
        out.append(f"{Path(cmd[0]).name} {text.split()[0] if text.split() else '?'}")
    return ", ".join(out)


@contextlib.contextmanager
def scripted_servers(*, one_piece: bool) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="maildiag-bench-") as tmp, _silent_udp() as dns:
        fast = fast_servers(Path(tmp), one_piece=one_piece)
        try:
            how = "in one piece" if one_piece else "line by line"
            yield Servers(
                f"scripted (bench/benchpeers.py), multi-line replies {how}",
                fast.submission,
                fast.imaps,
                fast.pop3s,
                fast.ca_pem,
                f"{HOST}:{dns.getsockname()[1]}",
            )
        finally:
            fast.close()


@contextlib.contextmanager
def _silent_udp() -> Iterator[socket.socket]:
    """A DNS server that never answers: any query maildiag made would show as a timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    try:
        yield sock
    finally:
        sock.close()


# -- the commands -----------------------------------------------------------------------------


def check_args(s: Servers, services: Sequence[str], *, timeout: float = 10) -> list[str]:
    """``check`` without a password: connect, greeting, TLS, capabilities, AUTH-required probe;
    Nagios output, as a monitoring host runs it; no clock check (the plugins have none)."""
    spec = {
        "smtp": f"{HOST}:{s.submission}/starttls",
        "imap": f"{HOST}:{s.imaps}/ssl",
        "pop3": f"{HOST}:{s.pop3s}/ssl",
    }
    args = ["check", ADDRESS, "--only", ",".join(services)]
    for svc in services:
        args += [f"--{svc}", spec[svc]]
    return [
        *args,
        "--ca-file",
        str(s.ca_pem),
        "--resolver",
        s.resolver,
        "--no-clock",
        "--timeout",
        f"{timeout:g}",
        "--format",
        "nagios",
    ]


def maildiag_check(s: Servers, services: Sequence[str], *, timeout: float = 10) -> list[str]:
    return [*maildiag_entry(), *check_args(s, services, timeout=timeout)]


def plugin_chain(s: Servers, plugins: Path, *, timeout: int = 10) -> list[list[str]]:
    """``check_smtp -S; check_imap -S; check_pop -S``: STARTTLS on 587, TLS on 993 and 995."""
    common = ["-H", HOST, "-t", str(timeout)]
    return [
        [str(plugins / "check_smtp"), *common, "-p", str(s.submission), "-S"],
        [str(plugins / "check_imap"), *common, "-p", str(s.imaps), "-S"],
        [str(plugins / "check_pop"), *common, "-p", str(s.pop3s), "-S"],
    ]


def check_smtp_cert(s: Servers, plugins: Path) -> list[str]:
    """STARTTLS, then the certificate's days to expiry (warn 21, critical 7)."""
    return [str(plugins / "check_smtp"), "-H", HOST, "-p", str(s.submission), "-S", "-D", "21,7"]


def swaks_tls(s: Servers) -> list[str]:
    # --helo and --to given, so swaks neither looks up this host's name nor prompts
    return [
        str(SWAKS),
        "--server",
        HOST,
        "--port",
        str(s.submission),
        "--tls",
        "--quit-after",
        "TLS",
        "--helo",
        "bench.example.test",
        "--to",
        ADDRESS,
    ]


def check_ssl_cert(s: Servers, plugins: Path) -> list[str]:
    # --ignore-sct: a private CA's certificate carries no CT timestamps (the check would fail)
    return [
        str(plugins / "check_ssl_cert"),
        "-H",
        HOST,
        "-p",
        str(s.imaps),
        "-P",
        "imaps",
        "--rootcert-file",
        str(s.ca_pem),
        "-w",
        "21",
        "-c",
        "7",
        "--ignore-sct",
    ]


def sslyze_certinfo(s: Servers) -> list[str]:
    return [
        str(SSLYZE),
        "--quiet",
        "--certinfo",
        "--certinfo_ca_file",
        str(s.ca_pem),
        f"{HOST}:{s.imaps}",
    ]


# -- the pairs --------------------------------------------------------------------------------


def mailbox_pair(s: Servers, plugins: Path, run: Launcher, label: str = "") -> Pair:
    return Pair(
        f"whole mailbox: SMTP 587 STARTTLS + IMAP 993 + POP3 995{label}",
        "check_smtp -S; check_imap -S; check_pop -S",
        lambda: run.measure(maildiag_check(s, ["smtp", "imap", "pop3"])),
        lambda: run.measure_chain(plugin_chain(s, plugins)),
        target=1.0,
        rss_target_mb=35.0,
    )


def smtp_pairs(s: Servers, plugins: Path, run: Launcher, label: str = "") -> list[Pair]:
    one = f"one STARTTLS submission port{label}"
    return [
        Pair(
            one,
            "check_smtp -S -D 21,7",
            lambda: run.measure(maildiag_check(s, ["smtp"])),
            lambda: run.measure(check_smtp_cert(s, plugins)),
            target=2.0,
        ),
        Pair(
            one,
            "swaks --tls --quit-after TLS",
            lambda: run.measure(maildiag_check(s, ["smtp"])),
            lambda: run.measure(swaks_tls(s)),
        ),
    ]


def cert_pairs(s: Servers, plugins: Path, run: Launcher) -> list[Pair]:
    work = "certificate of an implicit-TLS port (IMAP 993)"
    return [
        Pair(
            work,
            "check_ssl_cert -P imaps",
            lambda: run.measure(maildiag_check(s, ["imap"])),
            lambda: run.measure(check_ssl_cert(s, plugins)),
        ),
        Pair(
            work,
            "sslyze --certinfo",
            lambda: run.measure(maildiag_check(s, ["imap"])),
            lambda: run.measure(sslyze_certinfo(s)),
        ),
    ]


def filtered_pair(ports: Servers, plugins: Path, run: Launcher) -> Pair:
    t = FILTERED_TIMEOUT
    return Pair(
        f"all three ports filtered, timeout {t} s",
        f"check_smtp -S -t {t}; check_imap -S -t {t}; check_pop -S -t {t}",
        lambda: run.measure(maildiag_check(ports, ["smtp", "imap", "pop3"], timeout=t), ok=(2,)),
        lambda: run.measure_chain(plugin_chain(ports, plugins, timeout=t), ok=(2,)),
    )


def explain_pair(run: Launcher) -> Pair:
    return Pair(
        'cold `maildiag explain "535 5.7.8 ..."`',
        "python3 -c pass (the same interpreter)",
        lambda: run.measure([*maildiag_entry(), "explain", EXPLAIN_TEXT]),
        lambda: run.measure([sys.executable, "-c", "pass"]),
        target=3.0,
    )


@contextlib.contextmanager
def filtered_ports(resolver: str, ca_pem: Path) -> Iterator[Servers]:
    ports = [FilteredPort() for _ in range(3)]
    try:
        if not all(p.verify() for p in ports):
            raise RunFailed("this kernel does not drop SYNs on a full accept queue")
        yield Servers(
            "filtered (a full accept queue: SYNs dropped)",
            ports[0].port,
            ports[1].port,
            ports[2].port,
            ca_pem,
            resolver,
        )
    finally:
        for p in ports:
            p.close()


def run_pairs(pairs: Sequence[Pair], rounds: int) -> list[PairResult]:
    """One untimed warm-up of each side, then ``rounds`` rounds of A, B for every pair."""
    results = [PairResult(p) for p in pairs]
    for p in pairs:
        p.a()
        p.b()
    for _ in range(rounds):
        for r in results:
            r.a.append(r.pair.a())
            r.b.append(r.pair.b())
    return results


# -- output -----------------------------------------------------------------------------------

HEADER = (
    "| work | peer | maildiag median | peer median | ratio | per-round p25-p75 "
    "| CPU maildiag / peer | CPU ratio | peak RSS maildiag / peer | target |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


FLOOR_MB = [0.0]  # the launcher's floor, set in main(): a peak at it says only "at most this"


def _mb(value: float) -> str:
    return f"<={value:.1f}" if value <= FLOOR_MB[0] + 0.05 else f"{value:.1f}"


def row(r: PairResult) -> str:
    lo, hi = r.spread
    cpu_a, cpu_b = r.cpu_medians
    target = []
    if r.pair.target is not None:
        target.append(f"ratio <= {r.pair.target:g}")
    if r.pair.rss_target_mb is not None:
        target.append(f"RSS <= {r.pair.rss_target_mb:g} MB")
    mark = ("MISSED: " + "; ".join(r.misses)) if r.misses else "met"
    judged = f"{', '.join(target)}: {mark}" if target else "-"
    return (
        f"| {r.pair.work} | `{r.pair.peer}` | {r.a_median * 1000:.0f} ms | "
        f"{r.b_median * 1000:.0f} ms | {r.ratio:.2f} | {lo:.2f}-{hi:.2f} | "
        f"{cpu_a * 1000:.0f} / {cpu_b * 1000:.0f} ms | {r.cpu_ratio:.2f} | "
        f"{_mb(r.a_rss)} / {_mb(r.b_rss)} MB | {judged} |"
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds (default 9)")
    parser.add_argument("--filtered-rounds", type=int, default=3, help="for filtered ports")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 for filtered ports")
    parser.add_argument("--only", default=",".join(GROUPS), help="of: " + ", ".join(GROUPS))
    parser.add_argument("--servers", choices=("auto", "real", "scripted"), default="auto")
    parser.add_argument("--plugins", type=Path, default=PLUGINS, help="the plugins' directory")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    filtered_rounds = 1 if args.quick else args.filtered_rounds
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    if groups - set(GROUPS) or rounds < 1 or filtered_rounds < 1:
        parser.error(f"--only takes {', '.join(GROUPS)}; rounds must be at least 1")

    missing = missing_peers(args.plugins)
    if missing and groups != {"explain"}:
        print(f"bench_peers: skipped, peers not installed ({', '.join(missing)}): ", end="")
        print("run bash bench/install-peers.sh")
        return 0
    use_real = args.servers == "real"
    if args.servers == "auto":
        use_real = real_servers_missing() is None
    elif use_real and (why := real_servers_missing()):
        parser.error(f"--servers real: {why}")

    env = bench_env()
    compile_package(env)
    with Launcher(env) as run:
        return _run(args, groups, rounds, filtered_rounds, use_real, missing, run)


def _run(
    args: argparse.Namespace,
    groups: set[str],
    rounds: int,
    filtered_rounds: int,
    use_real: bool,
    missing: list[str],
    run: Launcher,
) -> int:
    print(f"# maildiag side by side ({rounds} paired rounds; {_load()})")
    if not missing:
        print("peers: " + "; ".join(peer_versions(args.plugins)))
    FLOOR_MB[0] = floor = run.floor_kb / 1024
    print(f"peak RSS floor (a process that does nothing, as launched here): {floor:.1f} MB")
    print()
    print(HEADER)
    results: list[PairResult] = []

    def show(batch: list[PairResult]) -> None:
        results.extend(batch)
        for r in batch:
            print(row(r), flush=True)

    try:
        if groups & {"mailbox", "smtp", "cert", "filtered"}:
            main_servers = real_servers() if use_real else scripted_servers(one_piece=True)
            with main_servers as s:
                pairs: list[Pair] = []
                if "mailbox" in groups:
                    pairs.append(mailbox_pair(s, args.plugins, run))
                if "smtp" in groups:
                    pairs += smtp_pairs(s, args.plugins, run)
                if "cert" in groups:
                    pairs += cert_pairs(s, args.plugins, run)
                show(run_pairs(pairs, rounds))
                if "filtered" in groups:
                    with filtered_ports(s.resolver, s.ca_pem) as f:
                        show(run_pairs([filtered_pair(f, args.plugins, run)], filtered_rounds))
                print(f"\nservers: {s.kind}")
        if "explain" in groups:
            show(run_pairs([explain_pair(run)], rounds))
        if "pieces" in groups:
            print("\n## multi-line replies in one piece vs line by line (scripted servers)\n")
            print(HEADER)
            with (
                scripted_servers(one_piece=True) as whole,
                scripted_servers(one_piece=False) as lines,
            ):
                # informational: the targets are judged on the main table's servers
                pairs = [
                    replace(p, target=None, rss_target_mb=None)
                    for p in (
                        mailbox_pair(whole, args.plugins, run, ", one piece"),
                        mailbox_pair(lines, args.plugins, run, ", line by line"),
                        smtp_pairs(whole, args.plugins, run, ", one piece")[0],
                        smtp_pairs(lines, args.plugins, run, ", line by line")[0],
                    )
                ]
                batch = run_pairs(pairs, rounds)
                show(batch)
            for i in (0, 2):
                piece, line = batch[i], batch[i + 1]
                print(
                    f"- {piece.pair.work.split(',')[0]}: line by line / one piece = "
                    f"{line.a_median / piece.a_median:.2f} for maildiag, "
                    f"{line.b_median / piece.b_median:.2f} for `{piece.pair.peer}`"
                )
    except RunFailed as exc:
        print(f"bench_peers: a run failed: {exc}")
        return 1
    print(f"\n{_load()}")
    missed = [r for r in results if r.misses]
    for r in missed:
        print(f"MISSED {r.pair.work} vs {r.pair.peer}: {'; '.join(r.misses)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
