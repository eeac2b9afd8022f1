"""The POP3 dialect (RFC 1939, CAPA RFC 2449, STLS RFC 2595): greeting, CAPA, STLS, QUIT.

Never RETR, DELE or anything that touches messages (SPEC safety).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from maildiag.config import MAX_REPLY_BYTES, MAX_REPLY_LINES
from maildiag.errors import ProtocolViolation, TooLong
from maildiag.models import Service
from maildiag.probes.base import Capabilities, Reply

if TYPE_CHECKING:
    from maildiag.net import Conn


def parse_status(line: str) -> Reply:
    if line.startswith("+OK"):
        return Reply(ok=True, text=line, lines=(line,))
    if line.startswith("-ERR"):
        return Reply(ok=False, text=line, lines=(line,))
    raise ProtocolViolation(f"not a POP3 status line: {line[:80]!r}")


def parse_capa(lines: Sequence[str]) -> dict[str, str]:
    """CAPA body lines (without the terminating ``.``): keyword and its arguments."""
    items: dict[str, str] = {}
    for line in lines:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            items[keyword.upper()] = params.strip()
    return items


class Pop3:
    service = Service.POP3
    starttls_keyword = "STLS"

    def command(self, conn: Conn, text: str, *, shown: str | None = None) -> Reply:
        conn.send_line(text, shown=shown)
        return parse_status(conn.read_line())

    def read_multiline(self, conn: Conn) -> list[str]:
        """Body lines up to the lone ``.``, dot-unstuffed, within the bounds."""
        deadline = time.monotonic() + conn.timeout
        lines: list[str] = []
        size = 0
        while True:
            line = conn.read_line(deadline=deadline)
            if line == ".":
                return lines
            lines.append(line[1:] if line.startswith("..") else line)
            size += len(line)
            if len(lines) >= MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
                raise TooLong(f"a response of more than {MAX_REPLY_LINES} lines")

    def greeting(self, conn: Conn) -> Reply:
        return parse_status(conn.read_line())

    def capabilities(self, conn: Conn, greeting: Reply) -> Capabilities:
        reply = self.command(conn, "CAPA")
        if not reply.ok:
            return Capabilities({}, reply)  # an RFC 1939-only server
        body = self.read_multiline(conn)
        return Capabilities(parse_capa(body), Reply(True, "\n".join([reply.text, *body])))

    def starttls(self, conn: Conn) -> Reply:
        return self.command(conn, "STLS")

    def quit(self, conn: Conn) -> None:
        self.command(conn, "QUIT")
