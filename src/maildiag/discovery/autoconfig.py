"""Autoconfig: the Thunderbird ``config-v1.1.xml`` a domain may publish about its mail servers.

Two places are tried (https only, as Thunderbird does for the domain's own files):

    https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<address>
    https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml

The host name goes through our ``Dns`` (so ``--resolver`` applies and tests can map
``autoconfig.example.test`` to 127.0.0.1); ``port`` overrides 443 for tests. The certificate is
verified against certifi plus an optional ``ca_file``. Every step is bounded: connect by the
timeout, the TLS handshake and every read by the fetch's deadline (``_DeadlineSSLSocket``: each
read waits only for what is left of it, so a server that sends its headers or body one byte at a
time is cut off at the deadline, not after each byte's timeout), the body by ``MAX_BYTES``. The
XML is parsed with the standard library after refusing any DOCTYPE or ENTITY declaration, so no
entity can expand.

Format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
Placeholders %EMAILADDRESS%, %EMAILLOCALPART%, %EMAILDOMAIN% are filled from the address.
"""

from __future__ import annotations

import http.client
import math
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from maildiag.models import Security, Service

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from maildiag.address import Address

MAX_BYTES = (
    128 * 1024
)  # real config files are a few KiB; the largest in Thunderbird's ISPDB ~10 KiB
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SOCKET_TYPES = {"SSL": Security.SSL, "STARTTLS": Security.STARTTLS, "PLAIN": Security.PLAIN}
_INCOMING = {"imap": Service.IMAP, "pop3": Service.POP3}

FailureKind = Literal["dns", "connect", "tls", "timeout", "http", "too_large", "xml", "empty"]


class AutoconfigError(Exception):
    """Why one autoconfig URL gave nothing usable (recorded as a fact, never a finding)."""

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


def location_url(host: str, path: str, port: int | None = None) -> str:
    netloc = host if port in (None, 443) else f"{host}:{port}"
    return f"https://{netloc}{path}"


def make_context(ca_file: str | None) -> ssl.SSLContext:
    """Strict verification: certifi's bundle plus ``ca_file`` (a private CA, tests)."""
    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.sslsocket_class = _DeadlineSSLSocket
    return ctx


class _DeadlineSSLSocket(ssl.SSLSocket):
    """A TLS socket whose every read and write ends by one ``deadline`` (monotonic seconds).

    http.client's timeout applies to each read: a server dripping one byte just inside it
    would keep a fetch alive for as long as it likes. Here each call may wait only for what is
    left of the deadline, then TimeoutError.
    """

    deadline = math.inf

    def _left(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the whole response did not arrive in time")
        if left != math.inf:
            self.settimeout(left)

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._left()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._left()
        return super().recv(*args, **kwargs)

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        self._left()
        return super().read(*args, **kwargs)

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._left()
        super().sendall(*args, **kwargs)


def fetch(
    host: str,
    path: str,
    *,
    ips: list[str],
    context: ssl.SSLContext,
    deadline: float,
    timeout: float,
    port: int | None = None,
    max_bytes: int = MAX_BYTES,
) -> bytes:
    """GET https://host[:port]/path from one of ``ips``; the body, or AutoconfigError."""
    port = port or 443
    last: AutoconfigError | None = None
    for ip in ips:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise last or AutoconfigError("timeout", f"no time left to connect to {host}")
        conn = _PinnedHTTPSConnection(host, ip, port, context, min(timeout, remaining), deadline)
        try:
            conn.request(
                "GET",
                path,
                headers={"Accept": "application/xml, text/xml", "User-Agent": "maildiag"},
            )
            response = conn.getresponse()
            if response.status != 200:
                raise AutoconfigError("http", f"HTTP {response.status} {response.reason}".strip())
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise AutoconfigError("too_large", f"{declared} bytes (limit {max_bytes})")
            return _read_bounded(response, deadline, max_bytes)
        except AutoconfigError as exc:
            if exc.kind in ("http", "too_large", "timeout"):
                raise  # the server answered: another address of it will not answer differently
            last = exc
        except ssl.SSLCertVerificationError as exc:
            raise AutoconfigError("tls", exc.verify_message or str(exc)) from None
        except ssl.SSLError as exc:
            last = AutoconfigError("tls", exc.reason or str(exc))
        except TimeoutError:
            raise AutoconfigError("timeout", f"{host} ({ip}) did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            last = AutoconfigError("connect", f"{ip}:{port}: {exc.__class__.__name__}: {exc}")
        finally:
            conn.close()
    raise last or AutoconfigError("dns", f"{host} has no address")


def _read_bounded(response: http.client.HTTPResponse, deadline: float, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise AutoconfigError("timeout", "the body did not arrive in time")
        chunk = response.read(min(16384, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise AutoconfigError("too_large", f"more than {max_bytes} bytes")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a name at an address we resolved ourselves (``--resolver``); SNI and Host = name."""

    def __init__(
        self,
        host: str,
        ip: str,
        port: int,
        context: ssl.SSLContext,
        timeout: float,
        deadline: float = math.inf,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip
        self._tls = context
        self._deadline = deadline

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        try:
            # the handshake is bounded by the socket's timeout as a whole (CPython's _ssl)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        if isinstance(self.sock, _DeadlineSSLSocket):
            self.sock.deadline = self._deadline


def parse(data: bytes, address: Address, url: str) -> AutoconfigResult:
    """Servers from a config-v1.1 document; AutoconfigError("xml"/"empty") when unusable."""
    import xml.etree.ElementTree as ET

    from maildiag.discovery.providers import valid_hostname

    if len(data) > MAX_BYTES:
        raise AutoconfigError("too_large", f"{len(data)} bytes")
    if _FORBIDDEN.search(data):
        raise AutoconfigError("xml", "DOCTYPE/ENTITY declarations are refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise AutoconfigError("xml", f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "clientConfig":
        raise AutoconfigError("xml", f"root element is <{_local(root.tag)}>, not <clientConfig>")
    provider = next((el for el in root if _local(el.tag) == "emailProvider"), None)
    if provider is None:
        raise AutoconfigError("xml", "no <emailProvider> element")
    servers: dict[Service, list[AutoconfigServer]] = {}
    skipped: list[str] = []
    for el in provider:
        kind = _local(el.tag)
        if kind not in ("incomingServer", "outgoingServer"):
            continue
        stype = (el.get("type") or "").strip().lower()
        service = _INCOMING.get(stype) if kind == "incomingServer" else None
        if kind == "outgoingServer" and stype == "smtp":
            service = Service.SMTP
        if service is None:
            continue  # exchange, ews, jmap ...: not ours
        host = _fill(_text(el, "hostname"), address, for_host=True)
        port_text = _text(el, "port")
        socket_type = _text(el, "socketType").upper()
        username_template = _text(el, "username")
        if not valid_hostname(host):
            skipped.append(f"{service}: host {host!r} is not a valid host name")
            continue
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            skipped.append(f"{service}: port {port_text!r} for {host} is not valid")
            continue
        if socket_type not in _SOCKET_TYPES:
            skipped.append(f"{service}: socketType {socket_type!r} for {host} is unknown")
            continue
        servers.setdefault(service, []).append(
            AutoconfigServer(
                service=service,
                host=host,
                port=int(port_text),
                security=_SOCKET_TYPES[socket_type],
                login=_fill(username_template, address, for_host=False),
                login_form=_login_form(username_template),
            )
        )
    if not servers:
        raise AutoconfigError("empty", "no IMAP, POP3 or SMTP server in the file")
    return AutoconfigResult(
        url=url,
        provider_id=(provider.get("id") or "").strip()[:100],
        servers={s: tuple(v) for s, v in servers.items()},
        skipped=tuple(skipped),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(el: Element, name: str) -> str:
    for child in el:
        if _local(child.tag) == name:
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
