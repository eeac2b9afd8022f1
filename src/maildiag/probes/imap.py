"""The IMAP dialect (RFC 3501 / 9051): greeting, CAPABILITY, STARTTLS, LOGOUT.

Only commands that leave a mailbox untouched are ever sent here: CAPABILITY, STARTTLS, LOGIN /
AUTHENTICATE, LOGOUT (see the SPEC's safety section: never SELECT, STORE, EXPUNGE, APPEND ...).
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

_LITERAL = re.compile(r"\{(\d{1,9})\+?\}$")
_CAPS_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.I)


def parse_tagged(tag: str, lines: Sequence[str]) -> Reply:
    """The tagged completion (``A1 OK ...``) that ends ``lines``; untagged lines kept in order."""
    if not lines:
        raise ProtocolViolation("empty IMAP response")
    last = lines[-1]
    head, _, rest = last.partition(" ")
    if head != tag:
        raise ProtocolViolation(f"expected a response tagged {tag}: {last[:80]!r}")
    status = rest.split(" ", 1)[0].upper()
    if status not in ("OK", "NO", "BAD"):
        raise ProtocolViolation(f"not an IMAP status response: {last[:80]!r}")
    return Reply(ok=status == "OK", text="\n".join(lines), lines=tuple(lines))


def parse_capabilities(text: str) -> dict[str, str]:
    """Capability atoms from ``* CAPABILITY ...`` or a ``[CAPABILITY ...]`` response code."""
    atoms: list[str] = []
    m = _CAPS_CODE.search(text)
    if m:
        atoms = m.group(1).split()
    for line in text.splitlines():
        if line.upper().startswith("* CAPABILITY "):
            atoms = line.split()[2:]
    return {a.upper(): "" for a in atoms}


class Imap:
    service = Service.IMAP
    starttls_keyword = "STARTTLS"

    def __init__(self) -> None:
        self._n = 0

    def next_tag(self) -> str:
        self._n += 1
        return f"M{self._n}"

    def read_response(self, conn: Conn, tag: str) -> Reply:
        """Lines up to and including the tagged completion; literals read within the bounds."""
        deadline = time.monotonic() + conn.timeout
        lines: list[str] = []
        size = 0
        while True:
            line = conn.read_line(deadline=deadline)
            rest = line
            # RFC 3501 4.3: the response line goes on after a literal's octets, maybe with more
            while m := _LITERAL.search(rest):
                n = int(m.group(1))
                if n > MAX_REPLY_BYTES:
                    raise TooLong(f"an IMAP literal of {n} bytes")
                if size + len(line) + n > MAX_REPLY_BYTES:
                    raise TooLong(f"a response of more than {MAX_REPLY_BYTES} bytes")
                literal = conn.read_exact(n, deadline=deadline)
                rest = conn.read_line(deadline=deadline)
                line += literal.decode("utf-8", "replace").replace("\r\n", " ") + rest
                line = conn.masked(line)  # the literal's octets bypassed read_line's mask
            lines.append(line)
            size += len(line)
            if line.startswith(tag + " "):
                return parse_tagged(tag, conn.masked_reply(lines))
            if not line.startswith(("*", "+")):
                raise ProtocolViolation(f"not an IMAP response line: {line[:80]!r}")
            if len(lines) >= MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
                raise TooLong(
                    f"a response of more than {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes"
                )

    def command(self, conn: Conn, text: str, *, shown: str | None = None) -> Reply:
        tag = self.next_tag()
        conn.send_line(f"{tag} {text}", shown=f"{tag} {shown}" if shown is not None else None)
        return self.read_response(conn, tag)

    def greeting(self, conn: Conn) -> Reply:
        line = conn.read_line()
        upper = line.upper()
        if upper.startswith(("* OK", "* PREAUTH")):
            return Reply(ok=True, text=line, lines=(line,))
        if upper.startswith("* BYE"):
            return Reply(ok=False, text=line, lines=(line,))
        raise ProtocolViolation(f"not an IMAP greeting: {line[:80]!r}")

    def capabilities(self, conn: Conn, greeting: Reply) -> Capabilities:
        reply = self.command(conn, "CAPABILITY")
        if not reply.ok:
            # a server that announced them in the greeting may still refuse the command
            return Capabilities(parse_capabilities(greeting.text), reply)
        return Capabilities(parse_capabilities(reply.text), reply)

    def starttls(self, conn: Conn) -> Reply:
        return self.command(conn, "STARTTLS")

    def quit(self, conn: Conn) -> None:
        self.command(conn, "LOGOUT")
