"""What the three protocol dialects share: a parsed reply and the dialect interface.

A dialect knows how one protocol greets, lists its capabilities and upgrades to TLS; the
session in ``probes/session.py`` drives any dialect through the same sequence of checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from maildiag.models import Service

if TYPE_CHECKING:
    from maildiag.net import Conn

_SMTP_LINE = re.compile(r"^\d{3}(?:[ -]|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """A server reply: ``ok`` is the protocol's plain success; ``text`` is verbatim."""

    ok: bool
    text: str
    code: int | None = None  # SMTP reply code
    lines: tuple[str, ...] = ()


@dataclass(slots=True)
class Capabilities:
    """Capability keywords (upper case) with their parameters, as the server listed them."""

    items: dict[str, str] = field(default_factory=dict)
    reply: Reply | None = None

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.items

    def auth_mechanisms(self) -> list[str]:
        """SASL mechanisms: SMTP ``AUTH PLAIN LOGIN``, IMAP ``AUTH=PLAIN``, POP3 ``SASL PLAIN``."""
        mechs: list[str] = []
        for key, value in self.items.items():
            if key in ("AUTH", "SASL"):
                mechs += value.upper().split()
            elif key.startswith("AUTH="):
                mechs.append(key[5:])
        return list(dict.fromkeys(m for m in mechs if m))


def identify(line: str) -> Service | None:
    """Which protocol a first line belongs to, judged by shape alone."""
    if line.startswith(("* OK", "* PREAUTH", "* BYE")):
        return Service.IMAP
    if line.startswith(("+OK", "-ERR")):
        return Service.POP3
    if _SMTP_LINE.match(line):
        return Service.SMTP
    return None


class Dialect(Protocol):
    service: Service
    starttls_keyword: str  # the capability that announces the upgrade

    def greeting(self, conn: Conn) -> Reply: ...

    def capabilities(self, conn: Conn, greeting: Reply) -> Capabilities: ...

    def starttls(self, conn: Conn) -> Reply: ...

    def quit(self, conn: Conn) -> None: ...
