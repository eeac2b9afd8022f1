"""Loopback peers for the benchmarks: slow SMTP/IMAP/POP3 servers and a filtered port.

``slow_smtp``/``slow_imap``/``slow_pop3`` answer like small real servers but sleep ``delay``
seconds before every line they send. ``fast_servers`` answer at once, with STARTTLS on SMTP and
implicit TLS on IMAP and POP3, writing each multi-line reply in one piece or line by line.

``FilteredPort`` is a loopback port where ``connect()`` times out instead of being refused: a
listening socket with backlog 0 whose accept queue is already full, so the kernel drops further
SYNs (tcp_abort_on_overflow=0, the default) — the same thing a firewall that DROPs does, without
root or iptables.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from dataclasses import dataclass
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


# -- fast servers that answer at once, for the side-by-side benchmark -----------------------------


def _reply(peer: PeerConn, lines: list[str], one_piece: bool) -> None:
    """A reply of one or more lines: one write, as Postfix and Dovecot do, or one write a line."""
    if one_piece:
        peer.send("\r\n".join(lines))
    else:
        for line in lines:
            peer.send(line)


def fast_submission(tls: ssl.SSLContext, *, one_piece: bool) -> LineServer:
    """Like Postfix on 587 with ``smtpd_tls_security_level=encrypt``: STARTTLS first, AUTH only
    after it, and an unauthenticated RCPT refused (554 5.7.1, the text Postfix gives)."""

    def handle(peer: PeerConn) -> None:
        _nodelay(peer, one_piece)
        secure = False
        _reply(peer, ["220 mail.example.test ESMTP bench"], one_piece)
        while (line := peer.readline(timeout=30)) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                extra = ["250-AUTH PLAIN LOGIN"] if secure else ["250-STARTTLS"]
                _reply(
                    peer,
                    [
                        "250-mail.example.test",
                        "250-PIPELINING",
                        "250-SIZE 10240000",
                        *extra,
                        "250-ENHANCEDSTATUSCODES",
                        "250-8BITMIME",
                        "250 SMTPUTF8",
                    ],
                    one_piece,
                )
            elif verb == "STARTTLS" and not secure:
                _reply(peer, ["220 2.0.0 Ready to start TLS"], one_piece)
                if not peer.start_tls(tls):
                    return
                _nodelay(peer, one_piece)
                secure = True
            elif not secure and verb not in ("QUIT", "NOOP", "RSET", "HELO"):
                _reply(peer, ["530 5.7.0 Must issue a STARTTLS command first"], one_piece)
            elif verb == "MAIL":
                _reply(peer, ["250 2.1.0 Ok"], one_piece)
            elif verb == "RCPT":
                _reply(
                    peer,
                    ["554 5.7.1 <bench@example.test>: Recipient address rejected: Access denied"],
                    one_piece,
                )
            elif verb in ("RSET", "NOOP", "HELO"):
                _reply(peer, ["250 2.0.0 Ok"], one_piece)
            elif verb == "QUIT":
                _reply(peer, ["221 2.0.0 Bye"], one_piece)
                return
            else:
                _reply(peer, ["502 5.5.2 Error: command not recognized"], one_piece)

    return LineServer(handle)


IMAP_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"


def fast_imaps(tls: ssl.SSLContext, *, one_piece: bool) -> LineServer:
    """Like Dovecot on 993: capabilities in the greeting, CAPABILITY and LOGOUT."""

    def handle(peer: PeerConn) -> None:
        _nodelay(peer, one_piece)
        _reply(peer, [f"* OK [CAPABILITY {IMAP_CAPS}] bench ready."], one_piece)
        while (line := peer.readline(timeout=30)) is not None:
            tag, _, rest = line.partition(" ")
            verb = rest.split(" ", 1)[0].upper()
            if verb == "CAPABILITY":
                _reply(
                    peer,
                    [f"* CAPABILITY {IMAP_CAPS}", f"{tag} OK Pre-login capabilities"],
                    one_piece,
                )
            elif verb == "NOOP":
                _reply(peer, [f"{tag} OK NOOP completed."], one_piece)
            elif verb == "LOGOUT":
                _reply(peer, ["* BYE Logging out", f"{tag} OK Logout completed."], one_piece)
                return
            else:
                _reply(peer, [f"{tag} BAD Error in IMAP command received by server."], one_piece)

    return LineServer(handle, tls=tls)


def fast_pop3s(tls: ssl.SSLContext, *, one_piece: bool) -> LineServer:
    """Like Dovecot on 995: CAPA and QUIT."""

    def handle(peer: PeerConn) -> None:
        _nodelay(peer, one_piece)
        _reply(peer, ["+OK bench ready."], one_piece)
        while (line := peer.readline(timeout=30)) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "CAPA":
                _reply(
                    peer,
                    [
                        "+OK",
                        "CAPA",
                        "TOP",
                        "UIDL",
                        "RESP-CODES",
                        "PIPELINING",
                        "AUTH-RESP-CODE",
                        "USER",
                        "SASL PLAIN LOGIN",
                        ".",
                    ],
                    one_piece,
                )
            elif verb == "QUIT":
                _reply(peer, ["+OK Logging out."], one_piece)
                return
            else:
                _reply(peer, ["-ERR Unknown command."], one_piece)

    return LineServer(handle, tls=tls)


def _nodelay(peer: PeerConn, one_piece: bool) -> None:
    """TCP_NODELAY in both modes, so the modes differ only in how replies are written: one write,
    one segment (and one TLS record) per line, or per reply. (With Nagle on, the several writes of
    a TLS handshake flight wait for the client's delayed ACK, 40 ms a time on Linux, which would
    swamp the difference measured here.)"""
    del one_piece  # the same for both: see above
    peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class FastServers:
    """SMTP 587-style STARTTLS, IMAP 993 and POP3 995 on 127.0.0.1, trusted through ``ca_pem``."""

    submission: int
    imaps: int
    pop3s: int
    ca_pem: Path
    servers: list[LineServer]

    def close(self) -> None:
        for s in self.servers:
            s.close()


def fast_servers(directory: Path, *, one_piece: bool) -> FastServers:
    """Scripted servers that answer at once; ``one_piece`` writes each multi-line reply in one
    write (as Postfix and Dovecot do), else one write, one segment, per line."""
    from peers import make_certs

    certs = make_certs(directory)
    servers = [
        fast_submission(certs.valid, one_piece=one_piece),
        fast_imaps(certs.valid, one_piece=one_piece),
        fast_pop3s(certs.valid, one_piece=one_piece),
    ]
    return FastServers(servers[0].port, servers[1].port, servers[2].port, certs.ca_pem, servers)
