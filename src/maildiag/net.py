"""Sockets with a timeout on every step and a size bound on every read; TLS contexts.

``connect()`` opens TCP (through ``Dns`` when ``--resolver`` was given) and returns a ``Conn``.
A ``Conn`` reads protocol lines against a per-step deadline — a peer that sends one byte per
second still hits the step's timeout — and never buffers more than ``max_line`` bytes of one line.
Every line read or written is recorded in ``transcript`` (``S:``/``C:``); callers pass the
redacted form of anything secret (``shown=``), and the raw bytes never reach the transcript. Once
a secret went out on a connection, every line the server sends back is masked by the run's
``Redactor`` before anyone sees it — the transcript, the reply parsers, an error message — and
only then escaped for the terminal (``maildiag.redact``). ``send_line`` refuses a line with CR,
LF or NUL in it: the server would read it as several commands.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from maildiag.config import MAX_LINE
from maildiag.errors import (
    Closed,
    ConnectFailed,
    NetError,
    StepTimeout,
    TooLong,
    UnsafeLine,
    classify,
)
from maildiag.terminal import printable

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns
    from maildiag.redact import Redactor

# A TLS record starts with content type 0x14..0x17 and version 0x03: a server that "greets" with
# these bytes speaks TLS where we expected plaintext.
_TLS_RECORD_TYPES = {0x14, 0x15, 0x16, 0x17}


def make_tls_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """certifi's bundle plus ``--ca-file``; ``verify=False`` fetches a bad chain to judge it."""
    import warnings

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Allow TLS 1.0/1.1 to connect so we can *report* an outdated server rather than fail blind.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:  # pragma: no cover - OpenSSL builds without SECLEVEL syntax
        pass
    if verify:
        import certifi

        ctx.load_verify_locations(cafile=certifi.where())
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsContexts:
    """TLS contexts built once per CA file and shared by many runs (an ``SSLContext`` may wrap
    sockets from several threads): loading certifi's bundle costs more CPU than a whole check of
    a server that answers at once, which a process running thousands of checks (the exporter)
    should pay once. Thread-safe; a CA file is read the first time it is asked for."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._verify: dict[str | None, ssl.SSLContext] = {}
        self._noverify: ssl.SSLContext | None = None

    def verify(self, ca_file: str | None) -> ssl.SSLContext:
        with self._lock:
            ctx = self._verify.get(ca_file)
            if ctx is None:
                ctx = self._verify[ca_file] = make_tls_context(ca_file)
            return ctx

    def noverify(self) -> ssl.SSLContext:
        with self._lock:
            if self._noverify is None:
                self._noverify = make_tls_context(verify=False)
            return self._noverify


def resolve(host: str, port: int, dns: Dns | None, timeout: float) -> list[tuple[int, str]]:
    """(family, ip) pairs for host: IP literals as is; names as discovery already found them,
    else through ``--resolver``, else the system's resolver — every way bounded by ``timeout``."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
    except ValueError:
        pass
    if dns is not None:
        from maildiag.dnsclient import DnsError

        try:
            known = dns.known(host)
            if known is None and dns.explicit:
                known = dns.addresses(host)
            if isinstance(known, DnsError):
                raise known
        except DnsError as exc:
            signal = "dns.timeout" if exc.kind == "timeout" else "dns.host_unresolved"
            raise ConnectFailed(f"cannot resolve {host}: {exc}", signal=signal) from exc
        if known is not None:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in known]
    return _getaddrinfo(host, port, timeout)


def _getaddrinfo(host: str, port: int, timeout: float) -> list[tuple[int, str]]:
    """The system resolver (honours /etc/hosts), in a thread: getaddrinfo has no timeout."""
    import threading

    box: list[object] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            box.append(exc)

    worker = threading.Thread(target=lookup, name=f"getaddrinfo:{host}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not box:
        raise ConnectFailed(
            f"cannot resolve {host}: the system resolver did not answer within {timeout:g}s",
            signal="dns.timeout",
        )
    result = box[0]
    if isinstance(result, BaseException):
        if isinstance(result, socket.gaierror):
            raise ConnectFailed(
                f"cannot resolve {host}: {result.strerror}", signal="dns.host_unresolved"
            ) from result
        raise classify(result, phase="connect", address=host) from result
    seen: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in result:  # type: ignore[attr-defined]
        pair = (int(family), str(sockaddr[0]))
        if pair not in seen:
            seen.append(pair)
    return seen


def connect(
    host: str,
    port: int,
    *,
    timeout: float,
    dns: Dns | None = None,
    transcript: list[str] | None = None,
    max_line: int = MAX_LINE,
    redact: Redactor | None = None,
) -> Conn:
    """TCP connect to the first address that answers; refused and timed out are told apart."""
    addresses = resolve(host, port, dns, timeout)
    deadline = time.monotonic() + timeout
    last: NetError | None = None
    for family, ip in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect((ip, port))
        except OSError as exc:
            sock.close()
            last = classify(exc, phase="connect", address=f"{ip}:{port}")
            continue
        sock.settimeout(timeout)
        return Conn(
            sock,
            timeout=timeout,
            peer=f"{ip}:{port}",
            transcript=transcript,
            max_line=max_line,
            redact=redact,
        )
    raise last or ConnectFailed(f"connect to {host}:{port} timed out", signal="connect.timeout")


@dataclass(frozen=True, slots=True)
class TlsSession:
    version: str
    cipher: str
    cert_der: bytes | None


class Conn:
    """A connection read line by line, each read bounded in time and size."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float,
        peer: str,
        transcript: list[str] | None = None,
        max_line: int = MAX_LINE,
        redact: Redactor | None = None,
    ) -> None:
        self.sock: socket.socket = sock
        self.timeout = timeout
        self.peer = peer
        self.transcript = transcript if transcript is not None else []
        self.max_line = max_line
        self._buf = b""
        self.tls: TlsSession | None = None
        self.redact = redact
        self.secret_sent = False  # from then on the server's lines are masked (module doc)

    # -- reading -----------------------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepTimeout(f"no complete answer within {self.timeout:g}s from {self.peer}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(4096)
        except TimeoutError as exc:
            raise StepTimeout(
                f"no complete answer within {self.timeout:g}s from {self.peer}"
            ) from exc
        except ssl.SSLError as exc:
            raise classify(exc, phase="read", address=self.peer) from exc
        except OSError as exc:
            raise classify(exc, phase="read", address=self.peer) from exc
        if not chunk:
            raise Closed(f"{self.peer} closed the connection")
        self._buf += chunk

    def read_line(self, *, deadline: float | None = None) -> str:
        """One line without its CRLF, decoded leniently; bounded by the step deadline."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while True:
            idx = self._buf.find(b"\n", 0, self.max_line + 1)
            if idx >= 0:
                raw, self._buf = self._buf[:idx], self._buf[idx + 1 :]
                line = self.masked(raw.rstrip(b"\r").decode("utf-8", "replace"))
                self.transcript.append("S: " + _printable(line))
                return line
            if len(self._buf) > self.max_line:
                # masked before the cut: an echo across the cut is masked whole
                head = self.masked(self._buf[: self.max_line].decode("utf-8", "replace"))[:60]
                self.transcript.append(f"S: {_printable(head)}... [over {self.max_line} bytes]")
                raise TooLong(f"{self.peer} sent a line longer than {self.max_line} bytes")
            self._fill(deadline)

    def masked(self, text: str) -> str:
        """A server's text with the secret masked, once one went out on this connection."""
        if self.secret_sent and self.redact is not None:
            return self.redact.reply(text)
        return text

    def masked_reply(self, lines: list[str]) -> list[str]:
        """The lines of one multi-line reply, just read, with an echo of the secret that a
        continuation line split in two masked as well (the transcript's copies too)."""
        if not (self.secret_sent and self.redact is not None and len(lines) > 1):
            return lines
        clean = self.redact.reply_lines(lines)
        t = self.transcript
        for old, new in zip(lines, clean, strict=True):
            if old == new:
                continue
            entry = "S: " + _printable(old)
            for i in range(len(t) - 1, -1, -1):  # the reply's lines are the latest ones
                if t[i] == entry:
                    t[i] = "S: " + _printable(new)
                    break
        return clean

    def read_exact(self, size: int, *, deadline: float) -> bytes:
        while len(self._buf) < size:
            self._fill(deadline)
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def peek_first_byte(self, wait: float) -> int | None:
        """The first byte the server sends within ``wait`` seconds, or None when silent."""
        if self._buf:
            return self._buf[0]
        try:
            self._fill(time.monotonic() + wait)
        except StepTimeout:
            return None
        return self._buf[0]

    @property
    def looks_like_tls(self) -> bool:
        return len(self._buf) >= 2 and self._buf[0] in _TLS_RECORD_TYPES and self._buf[1] == 3

    # -- writing -----------------------------------------------------------------------
    def send_line(self, line: str, *, shown: str | None = None) -> None:
        """Send ``line`` + CRLF; the transcript gets ``shown`` instead when it is secret.

        A CR, LF or NUL inside ``line`` is refused (``UnsafeLine``): whatever follows it would
        reach the server as a command of its own (``DELE 1`` smuggled in a login).
        """
        if "\r" in line or "\n" in line or "\0" in line:
            raise UnsafeLine(
                "refused to send a command with a line break or NUL in it: the server would "
                "read the rest as another command"
            )
        self.transcript.append("C: " + (shown if shown is not None else _printable(line)))
        if shown is not None:
            self.secret_sent = True
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(line.encode("utf-8") + b"\r\n")
        except OSError as exc:
            raise classify(exc, phase="write", address=self.peer) from exc

    # -- TLS -----------------------------------------------------------------------------
    def start_tls(self, ctx: ssl.SSLContext, server_hostname: str) -> TlsSession:
        """Wrap the socket in TLS (implicit or after STARTTLS).

        Plaintext bytes the server sent after its STARTTLS reply are dropped unread: nothing may
        follow that reply in the clear (RFC 3207 4.2, RFC 2595), and taking them as answers after
        the upgrade would let a man in the middle inject them.
        """
        if self._buf:
            self._buf = b""
        self.transcript.append("-- TLS handshake --")
        self.sock.settimeout(self.timeout)
        try:
            self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname or None)
        except (OSError, ssl.SSLError) as exc:
            err = classify(exc, phase="tls", address=self.peer)
            self.transcript.append(f"-- TLS failed: {err} --")
            raise err from exc
        tls = self.sock
        assert isinstance(tls, ssl.SSLSocket)
        cipher = tls.cipher()
        self.tls = TlsSession(
            version=tls.version() or "",
            cipher=cipher[0] if cipher else "",
            cert_der=tls.getpeercert(binary_form=True),
        )
        self.transcript.append(f"-- TLS established: {self.tls.version} {self.tls.cipher} --")
        return self.tls

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - closing a dead socket
            pass


def _printable(text: str) -> str:
    """Control characters shown escaped so a hostile peer cannot drive the user's terminal."""
    return printable(text)
