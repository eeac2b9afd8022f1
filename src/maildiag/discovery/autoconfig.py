"""Autoconfig: the Thunderbird ``config-v1.1.xml`` a domain may publish about its mail servers,
and the same format as the ISPDB serves it online.

Two places of the domain's own are tried (https only, as Thunderbird does for them):

    https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<address>
    https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml

Fetching is ``maildiag.discovery.https`` (bounded in time and size, certificate verified against
certifi plus an optional ``ca_file``). The XML is parsed with the standard library after refusing
any DOCTYPE or ENTITY declaration, so no entity can expand.

Format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
Placeholders %EMAILADDRESS%, %EMAILLOCALPART%, %EMAILDOMAIN% are filled from the address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from maildiag.models import Security, Service

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from maildiag.address import Address

MAX_BYTES = 128 * 1024  # real config files are a few KiB; the largest in the ISPDB ~10 KiB
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SOCKET_TYPES = {"SSL": Security.SSL, "STARTTLS": Security.STARTTLS, "PLAIN": Security.PLAIN}
_INCOMING = {"imap": Service.IMAP, "pop3": Service.POP3}

FailureKind = Literal["too_large", "xml", "empty"]


class AutoconfigError(Exception):
    """Why a fetched document gave nothing usable (recorded as a fact, never a finding)."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True, slots=True)
class AutoconfigServer:
    service: Service
    host: str
    port: int
    security: Security
    login: str  # the username with placeholders filled in ("" when the file gives none)
    login_form: str  # "address", "localpart" or "other" (a fixed or unusual username)


@dataclass(frozen=True, slots=True)
class AutoconfigResult:
    url: str
    provider_id: str  # <emailProvider id="..."> as the file says (not our provider database)
    servers: dict[Service, tuple[AutoconfigServer, ...]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # servers in the file we could not use, and why


def autoconfig_locations(address: Address) -> list[tuple[str, str]]:
    """(host, path) pairs to try, best first; host in A-labels."""
    domain = address.ascii_domain
    query = quote(address.ascii, safe="@")
    return [
        (f"autoconfig.{domain}", f"/mail/config-v1.1.xml?emailaddress={query}"),
        (domain, "/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]


def safe_root(data: bytes) -> Element:
    """The root element of an untrusted XML document; AutoconfigError("xml"/"too_large").

    Any DOCTYPE or ENTITY declaration is refused before parsing, so no entity can expand
    (billion laughs, external entities); the size is bounded by ``MAX_BYTES``.
    """
    import xml.etree.ElementTree as ET

    if len(data) > MAX_BYTES:
        raise AutoconfigError("too_large", f"{len(data)} bytes")
    if _FORBIDDEN.search(data):
        raise AutoconfigError("xml", "DOCTYPE/ENTITY declarations are refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise AutoconfigError("xml", f"not well-formed XML: {exc}") from exc


def parse(data: bytes, address: Address, url: str) -> AutoconfigResult:
    """Servers from a config-v1.1 document; AutoconfigError("xml"/"empty") when unusable."""
    root = safe_root(data)
    if local_name(root.tag) != "clientConfig":
        name = local_name(root.tag)
        raise AutoconfigError("xml", f"root element is <{name}>, not <clientConfig>")
    provider = next((el for el in root if local_name(el.tag) == "emailProvider"), None)
    if provider is None:
        raise AutoconfigError("xml", "no <emailProvider> element")
    servers: dict[Service, list[AutoconfigServer]] = {}
    skipped: list[str] = []
    for el in provider:
        server = _server(el, address, skipped)
        if server is not None:
            servers.setdefault(server.service, []).append(server)
    if not servers:
        raise AutoconfigError("empty", "no IMAP, POP3 or SMTP server in the file")
    return AutoconfigResult(
        url=url,
        provider_id=(provider.get("id") or "").strip()[:100],
        servers={s: tuple(v) for s, v in servers.items()},
        skipped=tuple(skipped),
    )


def _server(el: Element, address: Address, skipped: list[str]) -> AutoconfigServer | None:
    """An <incomingServer>/<outgoingServer> of ours (IMAP, POP3, SMTP), or None with the
    reason in ``skipped`` when it cannot be used."""
    from maildiag.discovery.providers import valid_hostname

    kind = local_name(el.tag)
    stype = (el.get("type") or "").strip().lower()
    if kind == "incomingServer":
        service = _INCOMING.get(stype)
    else:
        service = Service.SMTP if kind == "outgoingServer" and stype == "smtp" else None
    if service is None:
        return None  # exchange, ews, jmap ...: not ours
    host = _fill(_text(el, "hostname"), address, for_host=True)
    port_text = _text(el, "port")
    socket_type = _text(el, "socketType").upper()
    username_template = _text(el, "username")
    if not usable_login(username_template):
        skipped.append(f"{service}: the username of {host} is not a plain login name")
        username_template = ""
    if not valid_hostname(host):
        skipped.append(f"{service}: host {host!r} is not a valid host name")
        return None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        skipped.append(f"{service}: port {port_text!r} for {host} is not valid")
        return None
    if socket_type not in _SOCKET_TYPES:
        skipped.append(f"{service}: socketType {socket_type!r} for {host} is unknown")
        return None
    return AutoconfigServer(
        service=service,
        host=host,
        port=int(port_text),
        security=_SOCKET_TYPES[socket_type],
        login=_fill(username_template, address, for_host=False),
        login_form=_login_form(username_template),
    )


def usable_login(login: str) -> bool:
    """A login name a document may propose: printable, no spaces or control characters, and
    short (it is shown in ``settings`` and must not carry terminal escapes)."""
    return len(login) <= 256 and all(c.isprintable() and not c.isspace() for c in login)


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(el: Element, name: str) -> str:
    for child in el:
        if local_name(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _fill(template: str, address: Address, *, for_host: bool) -> str:
    domain = address.ascii_domain if for_host else address.domain
    text = (
        template.replace("%EMAILADDRESS%", f"{address.local}@{domain}")
        .replace("%EMAILLOCALPART%", address.local)
        .replace("%EMAILDOMAIN%", domain)
    )
    return text.lower().rstrip(".") if for_host else text


def _login_form(template: str) -> str:
    if template == "%EMAILADDRESS%":
        return "address"
    if template == "%EMAILLOCALPART%":
        return "localpart"
    return "other"
