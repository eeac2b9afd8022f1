"""Hostile peers: whatever a server sends, maildiag ends on time, in bounded memory, and says what
the server did — exit 2, a finding, never a traceback.

Each peer is a scripted loopback server. Two layers of tests share them:

- the session (``probes.session.Session``) against each peer: the failing check, its signal and
  a summary that names what happened, within the step timeout;
- the real command in a child process (``python -m maildiag check ... --json``), all children
  at once to keep the file fast: exit code 2, a finding for the failing check, no traceback,
  the run within its time bound, and peak RSS (``os.wait4``'s ``ru_maxrss`` of that very child)
  under 100 MB.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import english, run_cli
from peers import FilteredPort, LineServer, PeerConn, free_port

from maildiag.config import MAX_LINE, MAX_REPLY_LINES, RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.probes.session import Env, Session

TIMEOUT = 1.5  # --timeout of every run here: the step bound the tests hold maildiag to
RSS_LIMIT_MB = 100

# -- the peers ---------------------------------------------------------------------------------


def _pour(peer: PeerConn, chunks: Iterator[bytes]) -> None:
    """Send until the client hangs up (it must: nothing here ever ends on its own)."""
    peer.sock.settimeout(30)
    for chunk in chunks:
        try:
            peer.sock.sendall(chunk)
        except OSError:
            return


def endless_line(peer: PeerConn) -> None:
    """A greeting that never ends: 220 and then 'a' forever, no newline."""

    def chunks() -> Iterator[bytes]:
        yield b"220 "
        while True:
            yield b"a" * 65536

    _pour(peer, chunks())


def binary_garbage(peer: PeerConn) -> None:
    """Random bytes forever (seeded; the first byte is not a TLS record type)."""
    rng = random.Random(7)

    def chunks() -> Iterator[bytes]:
        yield b"\x00\xff\x9c"
        while True:
            yield rng.randbytes(65536)

    _pour(peer, chunks())


def one_byte_per_second(peer: PeerConn) -> None:
    for byte in b"220 slow.example.test ESMTP ready\r\n":
        peer.sock.sendall(bytes([byte]))
        time.sleep(1.0)


def _tls_close(peer: PeerConn) -> None:
    """Read the client's ClientHello, answer half a ServerHello record, hang up."""
    peer.sock.settimeout(5)
    try:
        hello = peer.sock.recv(4096)
    except OSError:
        return
    if hello[:1] == b"\x16":
        # record header for 0x50 bytes of handshake, then only 6 of them
        peer.sock.sendall(b"\x16\x03\x03\x00\x50\x02\x00\x00\x4c\x03\x03")


def close_in_tls_handshake(peer: PeerConn) -> None:
    _tls_close(peer)


def close_in_starttls(peer: PeerConn) -> None:
    peer.send("220 hostile.example.test ESMTP")
    while (line := peer.readline(timeout=5)) is not None:
        verb = line.split(" ", 1)[0].upper()
        if verb == "EHLO":
            for reply in ("250-hostile.example.test", "250-STARTTLS", "250 SIZE 1000000"):
                peer.send(reply)
        elif verb == "STARTTLS":
            peer.send("220 2.0.0 Ready to start TLS")
            _tls_close(peer)
            return
        else:
            peer.send("502 5.5.2 not here")


def close_in_multiline(peer: PeerConn) -> None:
    peer.send("220 hostile.example.test ESMTP")
    if peer.readline(timeout=5) is not None:
        peer.send("250-hostile.example.test")
        peer.send("250-PIPELINING")
        peer.send("250-SIZE 1000", eol=False)  # and hang up mid-line


def ehlo_flood(peer: PeerConn) -> None:
    """100,000 EHLO continuation lines, sent without waiting for the client to read them."""
    peer.send("220 hostile.example.test ESMTP")
    if peer.readline(timeout=5) is None:
        return

    def chunks() -> Iterator[bytes]:
        for start in range(0, 100_000, 1000):
            yield b"".join(b"250-X-FLOOD-%06d\r\n" % i for i in range(start, start + 1000))
        yield b"250 OK\r\n"

    _pour(peer, chunks())


INVALID_UTF8 = b"554 5.7.1 \xff\xfe\xc3( refused \xed\xa0\x80 \x80\x80 for you"


def invalid_utf8(peer: PeerConn) -> None:
    peer.send(INVALID_UTF8)


def imap_on_smtp_port(peer: PeerConn) -> None:
    peer.send("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Dovecot ready.")
    peer.readline(timeout=5)


def hang_up_at_once(peer: PeerConn) -> None:
    """Accept, then close without a word (an overloaded or banning server)."""
    peer.sock.close()


def imap_literal_bomb(peer: PeerConn) -> None:
    """CAPABILITY answered with literal after literal, each just under the reply bound."""
    peer.send("* OK [CAPABILITY IMAP4rev1] ready")
    line = peer.readline(timeout=5)
    if line is None:
        return
    tag = line.split(" ", 1)[0]

    def chunks() -> Iterator[bytes]:
        while True:
            yield b"* CAPABILITY {60000}\r\n" + b"x" * 60000 + b"\r\n"
        yield tag.encode() + b" OK never"  # unreachable: the flood never ends

    _pour(peer, chunks())


def imap_huge_literal(peer: PeerConn) -> None:
    """A literal announced as nearly a gigabyte."""
    peer.send("* OK [CAPABILITY IMAP4rev1] ready")
    if peer.readline(timeout=5) is not None:
        peer.send("* CAPABILITY {999999999}")
        peer.readline(timeout=5)


def pop3_endless_capa(peer: PeerConn) -> None:
    """CAPA that never sends its terminating dot."""
    peer.send("+OK ready")
    if peer.readline(timeout=5) is None:
        return

    def chunks() -> Iterator[bytes]:
        yield b"+OK Capability list follows\r\n"
        i = 0
        while True:
            yield b"".join(b"X-CAPA-%d\r\n" % (i + k) for k in range(1000))
            i += 1000

    _pour(peer, chunks())


def terminal_escapes(peer: PeerConn) -> None:
    """A refusal that tries to clear the screen and retitle the terminal."""
    peer.send(b"554 5.7.1 \x1b[2J\x1b]0;owned\x07 no service \x1b[31mred\x1b[0m")


@dataclass(frozen=True)
class Case:
    name: str
    handler: Callable[[PeerConn], None]
    security: Security  # how the target is given (AUTO: no mode, the port is probed)
    check: str  # the check that fails
    signals: frozenset[str]  # any of these problem signals
    says: tuple[str, ...]  # the failing check's summary contains one of these (lower case)
    steps: float  # how many step timeouts the run may take (plus start-up slack)
    # the command runs in a child process when the peer floods (peak RSS is the point) or is
    # slow (children run side by side); the quick ones run in-process
    child: bool = False

    @property
    def service(self) -> Service:
        return Service(self.check.split(".", 1)[0])

    def cli_args(self, port: int) -> list[str]:
        svc = str(self.service)
        return [
            "check",
            "a@example.test",
            f"--{svc}",
            f"127.0.0.1:{port}{_SUFFIX[self.security]}",
            "--only",
            svc,
            "--no-clock",
            "--timeout",
            f"{TIMEOUT:g}",
        ]


CASES = [
    Case(
        "endless-line",
        endless_line,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.wrong_protocol"}),
        (f"longer than {MAX_LINE}", "over"),
        1,
        child=True,
    ),
    Case(
        "binary-garbage",
        binary_garbage,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.wrong_protocol"}),
        ("not a smtp greeting",),
        1,
        child=True,
    ),
    Case(
        "one-byte-per-second",
        one_byte_per_second,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.silent", "connect.timeout"}),
        ("within",),
        2,
        child=True,
    ),
    Case(
        "close-in-tls-handshake",
        close_in_tls_handshake,
        Security.SSL,
        "smtp.tls",
        frozenset({"tls.handshake_failed"}),
        ("closed", "eof", "reset"),
        2,
        child=True,
    ),
    Case(
        "close-in-starttls",
        close_in_starttls,
        Security.STARTTLS,
        "smtp.tls",
        frozenset({"tls.handshake_failed"}),
        ("closed", "eof", "reset"),
        2,
    ),
    Case(
        "close-in-multiline-reply",
        close_in_multiline,
        Security.AUTO,
        "smtp.capabilities",
        frozenset({"greeting.closed"}),
        ("closed",),
        1,
    ),
    Case(
        "100000-ehlo-lines",
        ehlo_flood,
        Security.AUTO,
        "smtp.capabilities",
        frozenset({"greeting.wrong_protocol"}),
        (f"{MAX_REPLY_LINES} lines",),
        1,
        child=True,
    ),
    Case(
        "invalid-utf8",
        invalid_utf8,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.rejected"}),
        ("554 5.7.1",),
        1,
    ),
    Case(
        "imap-greeting-on-smtp-port",
        imap_on_smtp_port,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.wrong_protocol"}),
        ("* ok",),
        1,
    ),
    Case(
        "hang-up-at-once",
        hang_up_at_once,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.closed"}),
        ("closed",),
        1,
    ),
    Case(
        "hang-up-at-once-ssl",
        hang_up_at_once,
        Security.SSL,
        "smtp.tls",
        frozenset({"tls.handshake_failed"}),
        ("closed", "reset", "eof"),
        1,
    ),
    Case(
        "imap-literal-flood",
        imap_literal_bomb,
        Security.PLAIN,
        "imap.capabilities",
        frozenset({"greeting.wrong_protocol"}),
        ("more than",),
        1,
        child=True,
    ),
    Case(
        "imap-gigabyte-literal",
        imap_huge_literal,
        Security.PLAIN,
        "imap.capabilities",
        frozenset({"greeting.wrong_protocol"}),
        ("literal of 999999999 bytes",),
        1,
        child=True,
    ),
    Case(
        "pop3-capa-without-end",
        pop3_endless_capa,
        Security.PLAIN,
        "pop3.capabilities",
        frozenset({"greeting.wrong_protocol"}),
        ("more than",),
        1,
        child=True,
    ),
    Case(
        "terminal-escapes",
        terminal_escapes,
        Security.AUTO,
        "smtp.greeting",
        frozenset({"greeting.rejected"}),
        ("554 5.7.1",),
        1,
    ),
]
IDS = [c.name for c in CASES]


# -- the session against each peer --------------------------------------------------------------


@dataclass
class SessionRun:
    observations: dict[str, Observation]
    elapsed: float
    emitted: int


def _run_session(target: Target) -> SessionRun:
    seen: list[Observation] = []
    started = time.monotonic()
    Session(target, Env(RunConfig("a@example.test", timeout=TIMEOUT), seen.append)).probe()
    elapsed = time.monotonic() - started
    return SessionRun({o.check: o for o in seen}, elapsed, len(seen))


@pytest.fixture(scope="module")
def session_runs() -> Iterator[dict[str, SessionRun]]:
    """Every case's session, all at once (each in its own thread, as the runner does)."""
    servers = [LineServer(case.handler) for case in CASES]
    results: dict[str, SessionRun] = {}

    def run(case: Case, server: LineServer) -> None:
        target = Target(case.service, "127.0.0.1", server.port, case.security)
        results[case.name] = _run_session(target)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(CASES, servers, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    yield results
    for server in servers:
        server.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_session_survives(case: Case, session_runs: dict[str, SessionRun]) -> None:
    run = session_runs[case.name]
    obs, elapsed = run.observations, run.elapsed
    assert run.emitted == len(obs), "every check id is emitted exactly once"
    assert elapsed < case.steps * TIMEOUT + 1.0, f"took {elapsed:.2f}s"
    failed = obs[case.check]
    assert failed.status is Status.FAIL, failed
    assert "internal error" not in english(failed), english(failed)
    assert {p.signal for p in failed.problems} & case.signals, failed.problems
    summary = english(failed).lower()
    assert any(word in summary for word in case.says), english(failed)
    for o in obs.values():
        assert "check.internal_error" not in {p.signal for p in o.problems}, o
        for line in o.transcript:  # what reaches a terminal is escaped
            assert "\x1b" not in line and "\x07" not in line, line
            assert len(line) < MAX_LINE + 200
    order = list(obs)
    for check in order[order.index(case.check) + 1 :]:
        if check.endswith(".capabilities") and case.check.endswith(".tls"):
            continue  # what the server listed before the failed upgrade is still reported
        assert obs[check].status is Status.SKIP, obs[check]


# -- the real command in a child process ----------------------------------------------------------


@dataclass
class ChildRun:
    code: int
    out: str
    err: str
    wall: float  # seconds from spawn to exit, start-up included
    peak_rss_mb: float  # maildiag's own ru_maxrss (see _LAUNCHER)

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.out)  # type: ignore[no-any-return]


_SUFFIX = {
    Security.AUTO: "",
    Security.SSL: "/ssl",
    Security.STARTTLS: "/starttls",
    Security.PLAIN: "/plain",
}


# ru_maxrss counts the pages a forked child shares with its parent before exec, so a child forked
# straight from a large pytest process reports pytest's size. A small launcher, itself just
# exec'd, forks maildiag and reports that grandchild's own peak: maildiag's memory alone.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.executable, [sys.executable, '-m', 'maildiag', *sys.argv[2:]])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _spawn(args: list[str], env: dict[str, str], workdir: Path, name: str) -> ChildRun:
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    rss_path = workdir / f"{name}.rss"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(rss_path), *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        wall = time.monotonic() - started
    usage_kb = int(rss_path.read_text())
    return ChildRun(
        proc.returncode,
        out_path.read_text("utf-8", "replace"),
        err_path.read_text("utf-8", "replace"),
        wall,
        usage_kb / 1024,
    )


@pytest.fixture(scope="module")
def child_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ChildRun]]:
    """The child cases through ``python -m maildiag check``, all children at once."""
    workdir = tmp_path_factory.mktemp("hostile")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAILDIAG_", "LC_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(LANG="C.UTF-8", XDG_CACHE_HOME=str(workdir / "cache"))
    cases = [c for c in CASES if c.child]
    servers = [LineServer(case.handler) for case in cases]
    jobs: dict[str, list[str]] = {}
    for case, server in zip(cases, servers, strict=True):
        jobs[case.name] = [*case.cli_args(server.port), "--json", "--transcript"]
    results: dict[str, ChildRun] = {}
    # warm the rule cache (and byte-compile) once: the children measure the run
    _spawn(["explain", "550 warm-up"], env, workdir, "warm")

    def run(name: str) -> None:
        results[name] = _spawn(jobs[name], env, workdir, name)

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    yield results
    for server in servers:
        server.close()


def _check(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["id"] == check_id)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_command_survives(
    case: Case, child_runs: dict[str, ChildRun], line_server: Callable[..., LineServer]
) -> None:
    if case.child:
        run = child_runs[case.name]
    else:
        server = line_server(case.handler)
        started = time.monotonic()
        result = run_cli(*case.cli_args(server.port), "--json", "--transcript")
        run = ChildRun(result.code, result.out, result.err, time.monotonic() - started, 0.0)
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err
    assert run.code == 2, (run.code, run.err)
    report = run.report
    assert report["exit_code"] == 2 and report["status"] == "fail"
    session_ms = sum(
        c["duration_ms"] for c in report["checks"] if c["id"].startswith(f"{case.service}.")
    )
    assert session_ms <= (case.steps * TIMEOUT + 1.0) * 1000, session_ms
    failed = _check(report, case.check)
    assert failed["status"] == "fail", failed
    assert any(word in failed["summary"].lower() for word in case.says), failed["summary"]
    assert failed["findings"], f"no finding explains {case.check}: {failed['summary']}"
    finding = failed["findings"][0]
    assert finding["title"] and finding["steps"] and finding["category"]
    assert finding["severity"] == "fail"
    assert any(f["rule"] == finding["rule"] for f in report["findings"])
    assert run.peak_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.peak_rss_mb:.0f} MB"  # 0: in-process
    json.dumps(report)  # the report holds no unencodable text (invalid UTF-8 came in)


TEXT_CASES = [
    c
    for c in CASES
    if c.name
    in {
        "terminal-escapes",
        "invalid-utf8",
        "binary-garbage",
        "endless-line",
        "imap-greeting-on-smtp-port",
    }
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c.name for c in TEXT_CASES])
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_text_output_is_safe_for_a_terminal(
    case: Case, lang: str, line_server: Callable[..., LineServer]
) -> None:
    server = line_server(case.handler)
    result = run_cli(*case.cli_args(server.port), "--transcript", "--verbose", "--lang", lang)
    assert "Traceback" not in result.err, result.err
    assert result.code == 2, (result.code, result.err)
    for stream in (result.out, result.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\x00" not in stream
    assert max((len(line) for line in result.out.splitlines()), default=0) < MAX_LINE + 200
    assert case.check in result.out


def test_report_peak_rss(
    child_runs: dict[str, ChildRun], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every child's exit, time, peak RSS and failing checks, printed for the record."""
    with capsys.disabled():
        for name, run in sorted(child_runs.items()):
            failed = []
            if run.out.startswith("{"):
                failed = [
                    (c["id"], [f["rule"] for f in c["findings"]])
                    for c in run.report["checks"]
                    if c["status"] == "fail"
                ]
            print(
                f"\n[hostile] {name}: exit {run.code}, {run.wall:.2f}s wall, "
                f"peak RSS {run.peak_rss_mb:.1f} MB {failed if failed else ''}"
            )
        worst = max(child_runs.items(), key=lambda kv: kv[1].peak_rss_mb)
        print(f"\n[hostile] worst peak RSS: {worst[0]} {worst[1].peak_rss_mb:.1f} MB")
    assert worst[1].peak_rss_mb < RSS_LIMIT_MB


# -- every port filtered ---------------------------------------------------------------------------


def test_every_port_filtered_takes_one_timeout_not_three() -> None:
    timeout = 1.0
    ports = [FilteredPort() for _ in range(3)]
    try:
        probe = socket.socket()
        probe.settimeout(0.2)
        with pytest.raises(TimeoutError):
            probe.connect(("127.0.0.1", ports[0].port))
        probe.close()
        # imports and the rule cache are start-up, not the run: warm them on a refused port
        run_cli(
            "check",
            "a@example.test",
            "--json",
            "--no-clock",
            "--only",
            "smtp",
            "--smtp",
            f"127.0.0.1:{free_port()}/plain",
        )
        started = time.monotonic()
        result = run_cli(
            "check",
            "a@example.test",
            "--json",
            "--no-clock",
            "--timeout",
            f"{timeout:g}",
            "--smtp",
            f"127.0.0.1:{ports[0].port}/ssl",
            "--imap",
            f"127.0.0.1:{ports[1].port}/starttls",
            "--pop3",
            f"127.0.0.1:{ports[2].port}",
        )
        elapsed = time.monotonic() - started
    finally:
        for p in ports:
            p.close()
    assert result.code == 2, result.err
    # one timeout, not three (the ports are waited for at once); the margin is for a busy machine
    assert elapsed < 2.5 * timeout, f"{elapsed:.2f}s for --timeout {timeout:g}"
    print(f"[hostile] every port filtered: {elapsed:.2f}s with --timeout {timeout:g}")
    report = result.json
    for svc in ("smtp", "imap", "pop3"):
        connect = _check(report, f"{svc}.connect")
        assert connect["status"] == "fail"
        assert "timed out" in connect["summary"]
        assert connect["findings"][0]["category"] == "connection_timeout"


def test_imap_line_continues_after_a_literal(line_server: Callable[..., LineServer]) -> None:
    """Not hostile, but found by the literal flood: RFC 3501 lines go on after a literal."""

    def handle(peer: PeerConn) -> None:
        peer.send("* OK ready")
        while (line := peer.readline()) is not None:
            tag = line.split(" ", 1)[0]
            if "CAPABILITY" in line:
                peer.send(b'* ID ("name" {7}\r\nDovecot "note" {3}\r\nabc)')
                peer.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
                peer.send(f"{tag} OK done")
            else:
                peer.send(f"{tag} OK bye")
                return

    server = line_server(handle)
    run = _run_session(Target(Service.IMAP, "127.0.0.1", server.port, Security.PLAIN))
    caps = run.observations["imap.capabilities"]
    assert caps.status is Status.OK, caps
    assert caps.data["auth"] == ["PLAIN"]
