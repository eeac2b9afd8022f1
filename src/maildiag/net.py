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

import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
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
        trust_certifi(ctx)
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def certifi_bundle() -> str:
    """certifi's CA bundle: the ``cacert.pem`` beside its package, which is what
    ``certifi.where()`` returns for an installed package (found without importing certifi,
    whose ``importlib.resources`` costs more than the lookup); else ``certifi.where()`` (a
    zipped install, a distribution's patched certifi)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("certifi")
    origin = spec.origin if spec is not None else None
    if origin and os.path.basename(origin) == "__init__.py":
        bundle = os.path.join(os.path.dirname(origin), "cacert.pem")
        if os.path.isfile(bundle):
            return bundle
    import certifi

    return str(certifi.where())


def trust_certifi(ctx: ssl.SSLContext) -> None:
    """Trust certifi's bundle: through its hashed directory where one can be kept, so OpenSSL
    reads only the CAs a chain asks for (``maildiag.castore``), else the whole file."""
    from maildiag.castore import hashed_bundle

    bundle = certifi_bundle()
    hashed = hashed_bundle(bundle)
    if hashed is None:
        ctx.load_verify_locations(cafile=bundle)
        return
    directory, eager = hashed
    ctx.load_verify_locations(capath=directory)
    if eager:
        ctx.load_verify_locations(cadata=eager)


class TlsContexts:
    """The TLS client contexts of a run, or of many runs (the exporter): each built once, when
    the first handshake needs it — a run whose ports are all refused or filtered never loads a
    CA bundle, and a process running thousands of checks loads certifi once per CA file.
    Thread-safe: an ``SSLContext`` may wrap sockets of several threads at once."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._verify: dict[str | None, ssl.SSLContext] = {}
        self._noverify: ssl.SSLContext | None = None

    def verify(self, ca_file: str | None = None) -> ssl.SSLContext:
        """certifi's bundle plus ``ca_file``, verifying the chain and the host name."""
        with self._lock:
            ctx = self._verify.get(ca_file)
            if ctx is None:
                ctx = self._verify[ca_file] = make_tls_context(ca_file)
            return ctx

    def noverify(self) -> ssl.SSLContext:
        """No verification: to fetch a chain that failed and judge it."""
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


# RFC 8305 section 8: the "Connection Attempt Delay" — how long one address may keep us waiting
# before the next one (of the other family, when there is one) is tried alongside it.
ATTEMPT_DELAY = 0.25

FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET6): "ipv6", int(socket.AF_INET): "ipv4"}


def sockaddr_text(ip: str, port: int) -> str:
    """``127.0.0.1:25``, ``[::1]:25``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def interleave(
    addresses: list[tuple[int, str]], prefer: str | None = None
) -> list[tuple[int, str]]:
    """RFC 8305 section 4: IPv6 first, then the families alternate (``prefer`` goes first: the
    address that answered this run already, so a reconnect does not wait on a broken one)."""
    v6 = [a for a in addresses if a[0] == socket.AF_INET6]
    v4 = [a for a in addresses if a[0] != socket.AF_INET6]
    first, second = (v6, v4) if v6 else (v4, [])
    out: list[tuple[int, str]] = []
    for i in range(max(len(first), len(second))):
        out += first[i : i + 1] + second[i : i + 1]
    if prefer is not None:
        out.sort(key=lambda a: a[1] != prefer)  # stable: the rest keep their order
    return out


@dataclass
class Attempt:
    """One address tried: its outcome once known (``pending`` while the connect runs)."""

    family: int
    ip: str
    port: int
    started: float = 0.0
    result: str = "not_tried"  # connected, refused, timeout, unreachable, unresolved, error
    error: NetError | None = None
    elapsed_ms: int | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, "ipv4")

    @property
    def failed(self) -> bool:
        return self.result not in ("connected", "not_tried", "pending")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "address": self.ip,
            "family": self.family_name,
            "result": self.result,
        }
        if self.elapsed_ms is not None:
            out["ms"] = self.elapsed_ms
        return out


@dataclass
class ConnectRecord:
    """What ``connect()`` did, address by address (``<svc>.connect`` data). Attempts still
    running when a connection was made go on in the background until their own deadline, so
    a family that does not answer is known as such (``settle``)."""

    attempts: list[Attempt] = field(default_factory=list)
    deadline: float = 0.0

    def settled(self) -> bool:
        return all(a.done.is_set() for a in self.attempts if a.result != "not_tried")

    def settle(self) -> None:
        """Wait (at most until the connect deadline) for the attempts still running."""
        for a in self.attempts:
            if a.result != "not_tried":
                a.done.wait(max(0.0, self.deadline - time.monotonic()) + 0.05)

    def to_json(self) -> list[dict[str, object]]:
        return [a.to_json() for a in self.attempts]


def connect(
    host: str,
    port: int,
    *,
    timeout: float,
    dns: Dns | None = None,
    transcript: list[str] | None = None,
    max_line: int = MAX_LINE,
    redact: Redactor | None = None,
    prefer: str | None = None,
    record: ConnectRecord | None = None,
) -> Conn:
    """TCP connect, both address families as RFC 8305 (Happy Eyeballs) has it: IPv6 first, the
    next address every ``ATTEMPT_DELAY`` seconds (at once when one fails), the first to connect
    wins. Refused and timed out are told apart; ``record`` keeps every address's outcome.

    ``dns.port_map`` (tests on loopback) sends a connect for port ``p`` to ``port_map[p]``.
    """
    addresses = interleave(resolve(host, port, dns, timeout), prefer)
    real_port = dns.port_map.get(port, port) if dns is not None else port
    rec = record if record is not None else ConnectRecord()
    rec.deadline = time.monotonic() + timeout
    rec.attempts = [Attempt(family, ip, port) for family, ip in addresses]
    won = _race(rec, real_port)
    if won is None:
        rec.settle()  # an attempt ending right at the deadline has its outcome in a moment
        raise _best_error(rec) or ConnectFailed(
            f"connect to {host}:{port} timed out", signal="connect.timeout"
        )
    sock, attempt = won
    sock.settimeout(timeout)
    return Conn(
        sock,
        timeout=timeout,
        peer=sockaddr_text(attempt.ip, port),
        transcript=transcript,
        max_line=max_line,
        redact=redact,
    )


def _race(rec: ConnectRecord, real_port: int) -> tuple[socket.socket, Attempt] | None:
    """Start the attempts staggered; the first socket that connects, or None at the deadline.

    An attempt that fails starts the next one at once (RFC 8305 section 5). Attempts still
    running when one connects (or when the deadline passes) finish on their own thread and
    close whatever they get: their outcome is kept in ``rec``.
    """
    events: queue.Queue[Attempt] = queue.Queue()
    lock = threading.Lock()
    winner: list[tuple[socket.socket, Attempt]] = []
    over = threading.Event()

    def attempt_one(a: Attempt) -> None:
        sock = socket.socket(a.family, socket.SOCK_STREAM)
        sock.settimeout(max(0.01, rec.deadline - time.monotonic()))
        try:
            sock.connect((a.ip, real_port))
        except OSError as exc:
            sock.close()
            a.error = classify(exc, phase="connect", address=sockaddr_text(a.ip, a.port))
            a.result = _RESULTS.get(a.error.signal, "error")
        else:
            a.result = "connected"
            with lock:
                if winner or over.is_set():  # another address won, or the race is over
                    sock.close()
                else:
                    winner.append((sock, a))
        a.elapsed_ms = int((time.monotonic() - a.started) * 1000)
        a.done.set()
        events.put(a)

    if len(rec.attempts) == 1:  # nothing to race: connect in this thread
        only = rec.attempts[0]
        only.started, only.result = time.monotonic(), "pending"
        attempt_one(only)
        return winner[0] if winner else None

    started = running = 0
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if started < len(rec.attempts) and now >= next_at:
            a = rec.attempts[started]
            a.started, a.result = now, "pending"
            started, running, next_at = started + 1, running + 1, now + ATTEMPT_DELAY
            threading.Thread(
                target=attempt_one, args=(a,), name=f"connect:{a.ip}", daemon=True
            ).start()
            continue
        if running == 0 or now >= rec.deadline:
            with lock:  # from now on an attempt that connects closes its own socket
                over.set()
                return winner[0] if winner else None
        wait = rec.deadline - now
        if started < len(rec.attempts):
            wait = min(wait, next_at - now)
        try:
            done = events.get(timeout=max(0.0, wait))
        except queue.Empty:
            continue
        running -= 1
        if done.result == "connected":
            with lock:
                if winner:
                    return winner[0]
        next_at = time.monotonic()  # a failure: the next address at once


_RESULTS = {
    "connect.refused": "refused",
    "connect.timeout": "timeout",
    "connect.unreachable": "unreachable",
    "dns.host_unresolved": "unresolved",
}
# which failure speaks for the host when every address failed: one that the server (or a
# firewall in front of it) answered, before one that never came back
_RANK = ("refused", "timeout", "unreachable", "error")


def _best_error(rec: ConnectRecord) -> NetError | None:
    for result in _RANK:
        for a in rec.attempts:
            if a.result == result and a.error is not None:
                return a.error
    for a in rec.attempts:
        if a.result in ("pending", "not_tried"):
            return ConnectFailed(
                f"connect timed out ({sockaddr_text(a.ip, a.port)})", signal="connect.timeout"
            )
    return None


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
