"""Loopback peers for the benchmarks: slow SMTP/IMAP/POP3 servers and a filtered port.

``slow_smtp``/``slow_imap``/``slow_pop3`` answer like small real servers but sleep ``delay``
seconds before every line they send. ``FilteredPort`` is a loopback port where ``connect()``
times out instead of being refused: a listening socket with backlog 0 whose accept queue is
already full, so the kernel drops further SYNs (tcp_abort_on_overflow=0, the default) — the same
thing a firewall that DROPs does, without root or iptables.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from peers import FilteredPort, LineServer, PeerConn  # noqa: E402,F401 - FilteredPort: re-exported


def _say(peer: PeerConn, delay: float, *lines: str) -> None:
    for line in lines:
        time.sleep(delay)
        peer.send(line)


def slow_smtp(delay: float) -> LineServer:
    def handle(peer: PeerConn) -> None:
        _say(peer, delay, "220 bench.example.test ESMTP ready")
        while (line := peer.readline(timeout=30)) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                _say(
                    peer,
                    delay,
                    "250-bench.example.test",
                    "250-PIPELINING",
                    "250-SIZE 10240000",
                    "250-AUTH PLAIN LOGIN",
                    "250 8BITMIME",
                )
            elif verb == "HELO":
                _say(peer, delay, "250 bench.example.test")
            elif verb == "MAIL":
                _say(peer, delay, "250 2.1.0 Ok")
            elif verb == "RCPT":
                _say(peer, delay, "554 5.7.1 <a@example.test>: Relay access denied")
            elif verb in ("RSET", "NOOP"):
                _say(peer, delay, "250 2.0.0 Ok")
            elif verb == "QUIT":
                _say(peer, delay, "221 2.0.0 Bye")
                return
            else:
                _say(peer, delay, "502 5.5.2 Error: command not recognized")

    return LineServer(handle)


def slow_imap(delay: float) -> LineServer:
    def handle(peer: PeerConn) -> None:
        _say(peer, delay, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] bench IMAP ready")
        while (line := peer.readline(timeout=30)) is not None:
            tag, _, rest = line.partition(" ")
            verb = rest.split(" ", 1)[0].upper()
            if verb == "CAPABILITY":
                _say(
                    peer,
                    delay,
                    "* CAPABILITY IMAP4rev1 AUTH=PLAIN ID IDLE",
                    f"{tag} OK CAPABILITY completed",
                )
            elif verb == "LOGOUT":
                _say(peer, delay, "* BYE logging out", f"{tag} OK LOGOUT completed")
                return
            else:
                _say(peer, delay, f"{tag} BAD unknown command")

    return LineServer(handle)


def slow_pop3(delay: float) -> LineServer:
    def handle(peer: PeerConn) -> None:
        _say(peer, delay, "+OK bench POP3 ready")
        while (line := peer.readline(timeout=30)) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "CAPA":
                _say(
                    peer,
                    delay,
                    "+OK Capability list follows",
                    "TOP",
                    "UIDL",
                    "USER",
                    "SASL PLAIN",
                    ".",
                )
            elif verb == "QUIT":
                _say(peer, delay, "+OK Logging out.")
                return
            else:
                _say(peer, delay, "-ERR Unknown command.")

    return LineServer(handle)
