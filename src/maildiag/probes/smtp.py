"""The SMTP dialect (RFC 5321, STARTTLS RFC 3207, AUTH RFC 4954).

Replies are parsed by ``parse_reply_lines`` — pure, bounded, and never raising on junk other than
``ProtocolViolation`` — so the property tests can hammer it without a socket.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from maildiag.config import MAX_REPLY_BYTES, MAX_REPLY_LINES
from maildiag.errors import ProtocolViolation, TooLong
from maildiag.models import Service
from maildiag.probes.base import Capabilities, Reply

if TYPE_CHECKING:
    from maildiag.net import Conn

_LINE = re.compile(r"^(\d{3})([ -]?)(.*)$", re.S)


def parse_reply_lines(lines: Sequence[str]) -> Reply:
    """Join the lines of one SMTP reply (``250-a``, ``250 b``) into a Reply."""
    if not lines:
        raise ProtocolViolation("empty reply")
    code: int | None = None
    for line in lines:
        m = _LINE.match(line)
        if not m:
            raise ProtocolViolation(f"not an SMTP reply line: {line[:80]!r}")
        this = int(m.group(1))
        if code is None:
            code = this
        elif this != code:
            raise ProtocolViolation(f"reply code changed inside a multi-line reply: {line[:80]!r}")
    assert code is not None
    text = "\n".join(lines)
    return Reply(ok=200 <= code < 400, text=text, code=code, lines=tuple(lines))


def read_reply(conn: Conn) -> Reply:
    """One complete (possibly multi-line) reply within one step timeout and the size bounds."""
    deadline = time.monotonic() + conn.timeout
    lines: list[str] = []
    size = 0
    while True:
        line = conn.read_line(deadline=deadline)
        lines.append(line)
        size += len(line)
        m = _LINE.match(line)
        if not m:
            lines = conn.masked_reply(lines)  # an echo split across lines: masked before quoted
            raise ProtocolViolation(f"not an SMTP reply line: {lines[-1][:80]!r}")
        if m.group(2) != "-":
            return parse_reply_lines(conn.masked_reply(lines))
        if len(lines) >= MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
            raise TooLong(
                f"a reply of more than {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes"
            )


def command(conn: Conn, line: str, *, shown: str | None = None) -> Reply:
    conn.send_line(line, shown=shown)
    return read_reply(conn)


def ehlo_name(conn: Conn) -> str:
    """An address literal for our side of the connection (RFC 5321 4.1.3): needs no DNS."""
    try:
        ip = conn.sock.getsockname()[0]
    except OSError:  # pragma: no cover
        return "[127.0.0.1]"
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


class Smtp:
    service = Service.SMTP
    starttls_keyword = "STARTTLS"

    def greeting(self, conn: Conn) -> Reply:
        reply = read_reply(conn)
        return Reply(ok=reply.code == 220, text=reply.text, code=reply.code, lines=reply.lines)

    def capabilities(self, conn: Conn, greeting: Reply) -> Capabilities:
        reply = command(conn, f"EHLO {ehlo_name(conn)}")
        if not reply.ok:
            # an RFC 821 server: HELO works but has no extensions to list
            helo = command(conn, f"HELO {ehlo_name(conn)}")
            return Capabilities({}, helo if not helo.ok else reply)
        items: dict[str, str] = {}
        for line in reply.lines[1:]:
            keyword, _, params = line[4:].strip().partition(" ")
            if keyword:
                items[keyword.upper()] = params.strip()
        return Capabilities(items, reply)

    def starttls(self, conn: Conn) -> Reply:
        return command(conn, "STARTTLS")

    def quit(self, conn: Conn) -> None:
        conn.send_line("QUIT")
        read_reply(conn)
