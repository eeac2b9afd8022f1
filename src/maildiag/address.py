"""Mail addresses as users type them: parsed, checked and IDN-normalised (UTS 46).

``parse_address("алиса@пример.рф")`` keeps the original for display and gives the punycode
domain for the wire. A malformed address raises ``AddressError`` whose message is the one line
the CLI prints.

Normalisation: the domain is mapped by UTS 46 (case, full-width forms, the ideographic full stop
"。" as a dot) and kept twice — ``domain`` in Unicode for people, ``ascii_domain`` in A-labels
for DNS and SNI; a domain typed in A-labels (``xn--...``) gets its Unicode form too. The local
part (RFC 6531 allows UTF-8) is put in Unicode NFC (RFC 6532 section 3.1) but never case-folded:
only the server knows whether ``Ivan`` and ``ivan`` are one mailbox. ``Name <addr>`` and a
``mailto:`` prefix are accepted, since that is what people paste.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# RFC 5321 4.5.3.1: local part <= 64 octets, whole path <= 256; domain <= 255, label <= 63
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_LOCAL_FORBIDDEN = set(' <>()[]\\,;:"@\t\r\n')
_DOTS = {"\u3002": ".", "\uff0e": ".", "\uff61": "."}  # UTS 46 label separators
_MAX_INPUT = 1024  # nobody types more; anything longer is not an address


class AddressError(ValueError):
    """The text is not a usable mail address; str() is one line for the user."""


@dataclass(frozen=True, slots=True)
class Address:
    original: str  # as typed, stripped
    local: str  # as typed, in Unicode NFC (may be non-ASCII: SMTPUTF8); case kept
    domain: str  # Unicode form, lower case
    ascii_domain: str  # punycode (A-labels), lower case: what goes into DNS

    @property
    def ascii(self) -> str:
        """The address with its domain in A-labels (the local part cannot be encoded)."""
        return f"{self.local}@{self.ascii_domain}"

    def __str__(self) -> str:
        return self.original


def to_ascii_host(host: str) -> str:
    """A host name in A-labels; an IP literal or already-ASCII name comes back lower-cased."""
    host = _map_dots(host.strip()).rstrip(".")
    if host.isascii():
        return host.lower()
    import idna

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(f"{_show(host)} is not a valid domain name: {exc}") from exc


def to_unicode_host(ascii_host: str) -> str:
    """The Unicode form of a host in A-labels (unchanged when it has no ``xn--`` label)."""
    if "xn--" not in ascii_host:
        return ascii_host
    import idna

    try:
        return idna.decode(ascii_host)
    except idna.IDNAError as exc:
        raise AddressError(f"{_show(ascii_host)} is not a valid domain name: {exc}") from exc


def _map_dots(text: str) -> str:
    return "".join(_DOTS.get(c, c) for c in text)


def _show(text: str) -> str:
    """The user's text quoted for an error line: one line, not too long."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _unwrap(text: str) -> str:
    raw = text.strip()
    if raw.lower().startswith("mailto:"):
        raw = raw[7:].split("?", 1)[0].strip()
    if raw.endswith(">") and "<" in raw:  # "Alice Smith <alice@example.test>"
        raw = raw[raw.rindex("<") + 1 : -1].strip()
    return raw


def parse_address(text: str) -> Address:
    if len(text) > _MAX_INPUT:
        raise AddressError(
            f"{_show(text)} is not a mail address (longer than {_MAX_INPUT} characters)"
        )
    raw = _unwrap(text)
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise AddressError(f"{_show(text)}: the address contains control characters")
    if raw.count("@") != 1:
        raise AddressError(f"{_show(text)} is not a mail address (expected name@domain)")
    local, domain = raw.split("@")
    if not local:
        raise AddressError(f"{_show(text)} has nothing before the @")
    if not domain:
        raise AddressError(f"{_show(text)} has no domain after the @")
    local = unicodedata.normalize("NFC", local)
    if len(local.encode("utf-8")) > _MAX_LOCAL:
        raise AddressError(
            f"{_show(text)}: the part before the @ is longer than {_MAX_LOCAL} octets"
        )
    bad = sorted(set(local) & _LOCAL_FORBIDDEN)
    if bad or local.startswith(".") or local.endswith(".") or ".." in local:
        shown = f" (it contains {' '.join(repr(c) for c in bad)})" if bad else ""
        raise AddressError(f"{_show(text)}: the part before the @ is not valid{shown}")
    domain = _map_dots(domain).rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        raise AddressError(
            f"{_show(text)}: address literals like [{domain[1:-1]}] are not supported"
        )
    if "." not in domain:
        raise AddressError(f"{_show(text)}: the domain {domain!r} has no dot")
    ascii_domain = to_ascii_host(domain)
    if len(ascii_domain) > _MAX_DOMAIN:
        raise AddressError(f"{_show(text)}: the domain is longer than {_MAX_DOMAIN} characters")
    for label in ascii_domain.split("."):
        if not label or len(label) > 63:
            raise AddressError(
                f"{_show(text)}: the domain {domain!r} has an empty or too long label"
            )
        if label.startswith("-") or label.endswith("-"):
            raise AddressError(f"{_show(text)}: a domain label cannot start or end with '-'")
        if not all(c.isalnum() or c in "-_" for c in label):
            raise AddressError(f"{_show(text)}: the domain {domain!r} contains invalid characters")
    unicode_domain = to_unicode_host(ascii_domain)
    return Address(raw, local, unicode_domain, ascii_domain)
