"""One bounded HTTPS request for discovery: autoconfig, the ISPDB online, Autodiscover.

``fetch(host, path, ips=..., context=..., deadline=..., timeout=...)`` connects to one of the
addresses discovery resolved itself (so ``--resolver`` applies and tests map any name to
127.0.0.1; SNI and Host stay the name), sends a GET, or a POST when ``body`` is given, and
returns the body of a 200 answer. Bounds, all of them: the connect and every read by
``timeout``; the WHOLE exchange (connect, TLS, headers, body) by ``deadline``, enforced by a
watchdog that shuts the socket, so a server dripping one byte at a time cannot stretch it; the
body by ``max_bytes``. Redirects are not followed (a source that moved is a fact, not an answer).
Every failure is an ``HttpsError`` with a ``kind``; nothing else escapes.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

FailureKind = Literal["dns", "connect", "tls", "timeout", "http", "too_large"]
MAX_BYTES = 128 * 1024  # config files are a few KiB; the largest ISPDB file about 10 KiB


class HttpsError(Exception):
    """Why one URL gave nothing (recorded as a fact of discovery, never a finding)."""

    def __init__(self, kind: FailureKind, detail: str, status: int = 0) -> None:
        self.kind = kind
        self.detail = detail
        self.status = status  # the HTTP status when kind == "http"
        super().__init__(f"{kind}: {detail}")


def make_context(ca_file: str | None) -> ssl.SSLContext:
    """Strict verification: certifi's bundle plus ``ca_file`` (a private CA, tests).

    certifi's CAs through its hashed directory (``maildiag.net.trust_certifi``): a context per
    fetch costs nothing until its handshake asks for a CA."""
    from maildiag.net import trust_certifi

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    trust_certifi(ctx)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def url(host: str, path: str, port: int = 443) -> str:
    netloc = host if port == 443 else f"{host}:{port}"
    return f"https://{netloc}{path}"


@contextmanager
def deadline_guard(current: Callable[[], socket.socket | None], deadline: float) -> Iterator[None]:
    """Shut the socket ``current()`` returns (the TLS socket once wrapped) down when ``deadline``
    (time.monotonic) passes: any read blocked on it returns at once."""
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, (current,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _shut(current: Callable[[], socket.socket | None]) -> None:
    sock = current()
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def fetch(
    host: str,
    path: str,
    *,
    ips: list[str],
    context: ssl.SSLContext,
    deadline: float,
    timeout: float,
    port: int = 443,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BYTES,
) -> bytes:
    """GET (or POST ``body``) https://host[:port]/path from one of ``ips``; the body of a 200."""
    last: HttpsError | None = None
    for ip in ips:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise last or HttpsError("timeout", f"no time left to connect to {host}")
        request = _Request(host, path, body, headers or {}, max_bytes)
        try:
            return _one(request, ip, port, context, deadline, min(timeout, remaining))
        except HttpsError as exc:
            if exc.kind in ("http", "too_large", "timeout", "tls"):
                raise  # the server answered (or hung): another address of it will not differ
            last = exc
    raise last or HttpsError("dns", f"{host} has no address")


@dataclass(frozen=True)
class _Request:
    host: str
    path: str
    body: bytes | None
    headers: Mapping[str, str]
    max_bytes: int


def _one(
    request: _Request,
    ip: str,
    port: int,
    context: ssl.SSLContext,
    deadline: float,
    timeout: float,
) -> bytes:
    host = request.host
    try:
        sock = socket.create_connection((ip, port), timeout)
    except TimeoutError:
        raise HttpsError("timeout", f"{host} ({ip}) did not answer in time") from None
    except OSError as exc:
        raise HttpsError("connect", f"{ip}:{port}: {exc.__class__.__name__}: {exc}") from exc
    conn = _Connection(host, port, sock, context, timeout)
    try:
        with deadline_guard(lambda: conn.tls_sock or sock, deadline):
            return _exchange(conn, request, deadline)
    except HttpsError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise HttpsError("tls", exc.verify_message or str(exc)) from exc
    except ssl.SSLError as exc:
        raise HttpsError("tls", exc.reason or str(exc)) from exc
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
            raise HttpsError("timeout", f"{host} ({ip}) did not answer in time") from exc
        raise HttpsError("connect", f"{ip}:{port}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        conn.close()
        sock.close()


def _exchange(conn: _Connection, request: _Request, deadline: float) -> bytes:
    host, max_bytes = request.host, request.max_bytes
    sent = {"User-Agent": "maildiag", **request.headers}
    method = "POST" if request.body is not None else "GET"
    conn.request(method, request.path, body=request.body, headers=sent)
    response = conn.getresponse()
    if response.status != 200:
        raise HttpsError(
            "http", f"HTTP {response.status} {response.reason}".strip(), response.status
        )
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HttpsError("too_large", f"{declared} bytes (limit {max_bytes})")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(16384, max_bytes + 1 - size))
        if time.monotonic() >= deadline:
            raise HttpsError("timeout", f"the answer of {host} did not arrive in time")
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise HttpsError("too_large", f"more than {max_bytes} bytes")


class _Connection(http.client.HTTPSConnection):
    """HTTPS over a socket we connected ourselves (to an address we resolved)."""

    def __init__(
        self,
        host: str,
        port: int,
        sock: socket.socket,
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._raw = sock
        self._tls = context
        # kept after http.client hands the socket to the response (conn.sock is then None),
        # so the deadline guard can still shut it
        self.tls_sock: ssl.SSLSocket | None = None

    def connect(self) -> None:
        self.sock = self.tls_sock = self._tls.wrap_socket(self._raw, server_hostname=self.host)
