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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maildiag.config import MAX_LINE, MAX_REPLY_LINES, RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.probes.session import Env, Session
from peers import LineServer, PeerConn

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


CASES = [
    Case("endless-line", endless_line, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.wrong_protocol"}), (f"longer than {MAX_LINE}", "over"), 1),
    Case("binary-garbage", binary_garbage, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.wrong_protocol"}), ("not a smtp greeting",), 1),
    Case("one-byte-per-second", one_byte_per_second, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.silent", "connect.timeout"}), ("within",), 2),
    Case("close-in-tls-handshake", close_in_tls_handshake, Security.SSL, "smtp.tls",
         frozenset({"tls.handshake_failed"}), ("closed", "eof", "reset"), 2),
    Case("close-in-starttls", close_in_starttls, Security.STARTTLS, "smtp.tls",
         frozenset({"tls.handshake_failed"}), ("closed", "eof", "reset"), 2),
    Case("close-in-multiline-reply", close_in_multiline, Security.AUTO, "smtp.capabilities",
         frozenset({"greeting.closed"}), ("closed",), 1),
    Case("100000-ehlo-lines", ehlo_flood, Security.AUTO, "smtp.capabilities",
         frozenset({"greeting.wrong_protocol"}), (f"{MAX_REPLY_LINES} lines",), 1),
    Case("invalid-utf8", invalid_utf8, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.rejected"}), ("554 5.7.1",), 1),
    Case("imap-greeting-on-smtp-port", imap_on_smtp_port, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.wrong_protocol"}), ("* ok",), 1),
    Case("hang-up-at-once", hang_up_at_once, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.closed"}), ("closed",), 1),
    Case("hang-up-at-once-ssl", hang_up_at_once, Security.SSL, "smtp.tls",
         frozenset({"tls.handshake_failed"}), ("closed", "reset", "eof"), 1),
    Case("terminal-escapes", terminal_escapes, Security.AUTO, "smtp.greeting",
         frozenset({"greeting.rejected"}), ("554 5.7.1",), 1),
]
IDS = [c.name for c in CASES]


@pytest.fixture
def serve(line_server: Callable[..., LineServer]) -> Callable[[Case], LineServer]:
    def make(case: Case) -> LineServer:
        return line_server(case.handler)

    return make


# -- the session against each peer --------------------------------------------------------------


def run_session(target: Target) -> tuple[dict[str, Observation], float]:
    seen: list[Observation] = []
    started = time.monotonic()
    Session(target, Env(RunConfig("a@example.test", timeout=TIMEOUT), seen.append)).run()
    elapsed = time.monotonic() - started
    by_id = {o.check: o for o in seen}
    assert len(by_id) == len(seen), "every check id is emitted exactly once"
    return by_id, elapsed


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_session_survives(case: Case, serve: Callable[[Case], LineServer]) -> None:
    server = serve(case)
    target = Target(Service.SMTP, "127.0.0.1", server.port, case.security)
    obs, elapsed = run_session(target)
    assert elapsed < case.steps * TIMEOUT + 1.0, f"took {elapsed:.2f}s"
    failed = obs[case.check]
    assert failed.status is Status.FAIL, failed
    assert "internal error" not in failed.summary, failed.summary
    assert {p.signal for p in failed.problems} & case.signals, failed.problems
    summary = failed.summary.lower()
    assert any(word in summary for word in case.says), failed.summary
    for o in obs.values():
        assert "check.internal_error" not in {p.signal for p in o.problems}, o
        for line in o.transcript:  # what reaches a terminal is escaped
            assert "\x1b" not in line and "\x07" not in line, line
            assert len(line) < MAX_LINE + 200
    order = list(obs)
    for check in order[order.index(case.check) + 1:]:
        if check == "smtp.capabilities" and case.check == "smtp.tls":
            continue  # what the server listed before the failed upgrade is still reported
        assert obs[check].status is Status.SKIP, obs[check]
