"""Microsoft Autodiscover: what an Exchange or Microsoft 365 domain says about its mail servers.

Two requests, both bounded and parsed as untrusted input:

* **POX** (the domain's own service, as Outlook and Thunderbird ask it): a POST of the Outlook
  request schema to ``https://autodiscover.<domain>/autodiscover/autodiscover.xml``. A server that
  answers without a login (hosting panels, mailcow, many self-hosted setups) lists ``<Protocol>``
  elements of type IMAP, POP3 and SMTP with server, port, encryption and login name. Exchange
  itself usually answers 401 (it wants the password, which maildiag never sends there): a fact,
  not an answer. Redirects (``redirectAddr``, ``redirectUrl``) are recorded, not followed.
  https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/pox-autodiscover-response-for-exchange
* **JSON (Autodiscover v2)** of Exchange Online:
  ``https://outlook.office365.com/autodiscover/autodiscover.json/v1.0/<address>?Protocol=AutodiscoverV1``
  answers ``{"Protocol": "AutodiscoverV1", "Url": "https://outlook.office365.com/..."}`` for a
  mailbox hosted in Microsoft 365, and something else (another URL, an error) otherwise. A
  ``Url`` on ``outlook.office365.com`` is the proof; the servers then come from the provider
  database's Microsoft 365 entry.

How a ``<Protocol>`` maps to a mode follows Thunderbird (readAutoDiscoverXML): ``SSL`` off or
``Encryption`` None is plain; otherwise the port decides, 143/110/25/587 STARTTLS, any other port
implicit TLS (Autodiscover's "SSL" does not tell the two apart).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

from maildiag.discovery.autoconfig import (
    AutoconfigError,
    AutoconfigResult,
    AutoconfigServer,
    local_name,
    safe_root,
    usable_login,
)
from maildiag.models import Security, Service

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from maildiag.address import Address

POX_PATH = "/autodiscover/autodiscover.xml"
JSON_HOST = "outlook.office365.com"
EXCHANGE_ONLINE_HOSTS = frozenset({"outlook.office365.com"})
_REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
_RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
POX_HEADERS = {
    # outlook.com wants exactly this (Thunderbird bug 1454325)
    "Content-Type": "text/xml; charset=utf-8",
    "Accept": "text/xml, application/xml",
}
JSON_HEADERS = {"Accept": "application/json"}
_TYPES = {"IMAP": Service.IMAP, "POP3": Service.POP3, "SMTP": Service.SMTP}
_STARTTLS_PORTS = frozenset({143, 110, 25, 587})


def pox_host(address: Address) -> str:
    return f"autodiscover.{address.ascii_domain}"


def pox_request(address: Address) -> bytes:
    """The Outlook request schema asking for ``address``'s settings."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<Autodiscover xmlns="{_REQUEST_SCHEMA}"><Request>'
        f"<EMailAddress>{escape(address.ascii)}</EMailAddress>"
        f"<AcceptableResponseSchema>{_RESPONSE_SCHEMA}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def json_path(address: Address) -> str:
    return (
        "/autodiscover/autodiscover.json/v1.0/"
        f"{quote(address.ascii, safe='@')}?Protocol=AutodiscoverV1"
    )


def parse_json(data: bytes) -> str:
    """The ``Url`` of an Autodiscover v2 answer; AutoconfigError("empty") without one."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AutoconfigError("xml", f"not JSON: {exc}") from exc
    found = doc.get("Url") if isinstance(doc, dict) else None
    if not isinstance(found, str) or not found.startswith("https://"):
        code = doc.get("ErrorCode") if isinstance(doc, dict) else None
        raise AutoconfigError("empty", f"no https Url in the answer ({code or 'no ErrorCode'})")
    return found[:300]


def is_exchange_online(url: str) -> bool:
    """Autodiscover v2 pointed at Exchange Online: the mailbox is in Microsoft 365."""
    return (urlsplit(url).hostname or "").lower() in EXCHANGE_ONLINE_HOSTS


def parse_pox(data: bytes, address: Address, url: str) -> AutoconfigResult:
    """IMAP/POP3/SMTP servers from a POX answer; AutoconfigError("xml"/"empty") otherwise."""
    account = _account(safe_root(data))
    servers: dict[Service, list[AutoconfigServer]] = {}
    skipped: list[str] = []
    for protocol in account:
        if local_name(protocol.tag) != "Protocol":
            continue
        server = _server(protocol, address, skipped)
        if server is not None:
            servers.setdefault(server.service, []).append(server)
    if not servers:
        raise AutoconfigError("empty", "no IMAP, POP3 or SMTP protocol in the answer")
    return AutoconfigResult(
        url=url,
        provider_id="",
        servers={s: tuple(v) for s, v in servers.items()},
        skipped=tuple(skipped),
    )


def _account(root: Element) -> Element:
    """The <Account> of a settings answer; AutoconfigError for an error, a redirect, or junk."""
    if local_name(root.tag) != "Autodiscover":
        raise AutoconfigError("xml", f"root element is <{local_name(root.tag)}>")
    response = _child(root, "Response")
    if response is None:
        raise AutoconfigError("xml", "no <Response> element")
    error = _child(response, "Error")
    if error is not None:
        code, message = _text(error, "ErrorCode"), _text(error, "Message")
        raise AutoconfigError("empty", f"Autodiscover error {code}: {message}"[:200])
    account = _child(response, "Account")
    if account is None:
        raise AutoconfigError("empty", "no <Account> element")
    action = _text(account, "Action").lower()
    if action in ("redirectaddr", "redirecturl"):
        target = _text(account, "RedirectAddr") or _text(account, "RedirectUrl")
        raise AutoconfigError("empty", f"{action} to {target[:200]} (not followed)")
    return account


def _server(protocol: Element, address: Address, skipped: list[str]) -> AutoconfigServer | None:
    from maildiag.discovery.providers import valid_hostname

    service = _TYPES.get(_text(protocol, "Type").upper())
    if service is None:
        return None  # EXCH, EXPR, WEB, mapiHttp ...: not protocols maildiag checks
    host = _text(protocol, "Server").lower().rstrip(".")
    port_text = _text(protocol, "Port")
    if not valid_hostname(host):
        skipped.append(f"{service}: server {host[:100]!r} is not a valid host name")
        return None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        skipped.append(f"{service}: port {port_text[:20]!r} for {host} is not valid")
        return None
    port = int(port_text)
    login = _text(protocol, "LoginName")
    if not login or not usable_login(login):
        login = f"{address.local}@{address.domain}"
    return AutoconfigServer(
        service=service,
        host=host,
        port=port,
        security=_security(protocol, port),
        login=login,
        login_form=_login_form(login, address),
    )


def _security(protocol: Element, port: int) -> Security:
    if _text(protocol, "SSL").lower() == "off" or _text(protocol, "Encryption").lower() == "none":
        return Security.PLAIN
    return Security.STARTTLS if port in _STARTTLS_PORTS else Security.SSL


def _login_form(login: str, address: Address) -> str:
    if login.lower() in (f"{address.local}@{address.domain}".lower(), address.ascii.lower()):
        return "address"
    return "localpart" if login == address.local else "other"


def _child(el: Element, name: str) -> Element | None:
    return next((c for c in el if local_name(c.tag) == name), None)


def _text(el: Element, name: str) -> str:
    child = _child(el, name)
    return (child.text or "").strip() if child is not None else ""
