"""Mail addresses as users type them: parsed, checked and IDN-normalised (UTS 46).

``parse_address("алиса@пример.рф")`` keeps the original for display and gives the punycode
domain for the wire. A malformed address raises ``AddressError`` whose message is the one line
the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 5321 4.5.3.1: local part <= 64 octets, whole path <= 256; domain <= 255, label <= 63
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_LOCAL_FORBIDDEN = set(' <>()[]\\,;:"@\t\r\n')


class AddressError(ValueError):
    """The text is not a usable mail address; str() is one line for the user."""


@dataclass(frozen=True, slots=True)
class Address:
    original: str  # as typed, stripped
    local: str  # as typed (may be Unicode: SMTPUTF8)
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
    host = host.strip().rstrip(".")
    if host.isascii():
        return host.lower()
    import idna

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(f"{host!r} is not a valid domain name: {exc}") from None


def parse_address(text: str) -> Address:
    raw = text.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1].strip()
    if raw.count("@") != 1:
        raise AddressError(f"{text!r} is not a mail address (expected name@domain)")
    local, domain = raw.split("@")
    if not local:
        raise AddressError(f"{text!r} has nothing before the @")
    if not domain:
        raise AddressError(f"{text!r} has no domain after the @")
    if len(local.encode("utf-8")) > _MAX_LOCAL:
        raise AddressError(f"{text!r}: the part before the @ is longer than {_MAX_LOCAL} octets")
    bad = sorted(set(local) & _LOCAL_FORBIDDEN)
    if bad or local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"{text!r}: the part before the @ is not valid")
    if any(ord(c) < 32 or ord(c) == 127 for c in local):
        raise AddressError(f"{text!r}: the part before the @ contains control characters")
    domain = domain.rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        raise AddressError(f"{text!r}: address literals like [{domain[1:-1]}] are not supported")
    if "." not in domain:
        raise AddressError(f"{text!r}: the domain {domain!r} has no dot")
    ascii_domain = to_ascii_host(domain)
    if len(ascii_domain) > _MAX_DOMAIN:
        raise AddressError(f"{text!r}: the domain is longer than {_MAX_DOMAIN} characters")
    for label in ascii_domain.split("."):
        if not label or len(label) > 63:
            raise AddressError(f"{text!r}: the domain {domain!r} has an empty or too long label")
        if label.startswith("-") or label.endswith("-"):
            raise AddressError(f"{text!r}: a domain label cannot start or end with '-'")
        if not all(c.isalnum() or c in "-_" for c in label):
            raise AddressError(f"{text!r}: the domain {domain!r} contains invalid characters")
    unicode_domain = domain.lower()
    if not domain.isascii():
        import idna

        try:
            unicode_domain = idna.decode(ascii_domain)
        except idna.IDNAError:  # pragma: no cover - encode succeeded, decode cannot fail
            unicode_domain = domain.lower()
    return Address(raw, local, unicode_domain, ascii_domain)
