"""Real loopback peers for tests: a scripted line server, fake IMAP/POP3 servers, certificates.

Everything listens on 127.0.0.1 port 0 and runs in daemon threads. Every peer records what it
received (``peer.received``), so tests can assert what maildiag never sends.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PeerConn:
    """One accepted connection as the scripted server sees it."""

    def __init__(self, sock: socket.socket, server: LineServer) -> None:
        self.sock = sock
        self.server = server
        self._buf = b""

    def send(self, line: str | bytes, *, eol: bool = True) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        self.sock.sendall(data + (b"\r\n" if eol else b""))

    def readline(self, timeout: float = 5.0) -> str | None:
        """A line the client sent (recorded), or None when it closed or went quiet."""
        self.sock.settimeout(timeout)
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(4096)
            except (OSError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        self.server.received.append(line)
        return line

    def start_tls(self, ctx: ssl.SSLContext) -> bool:
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
            return True
        except (OSError, ssl.SSLError):
            return False


Handler = Callable[[PeerConn], None]


class LineServer:
    """A TCP server (127.0.0.1 on a free port, unless ``host``/``port`` say otherwise) that runs
    ``handler`` for each connection in a thread.

    ``tls`` makes it an implicit-TLS server. ``accept=False`` listens without ever accepting
    (the kernel completes the handshake but nothing is said: a silent peer).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        tls: ssl.SSLContext | None = None,
        accept: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.received: list[str] = []
        self.connections = 0
        self._active = 0
        self._idle = threading.Condition()
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        if accept:
            threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(sock)
            with self._idle:
                self._active += 1
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        try:
            self._converse(sock)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _converse(self, sock: socket.socket) -> None:
        if self.tls is not None:
            try:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        peer = PeerConn(sock, self)
        try:
            self.handler(peer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                peer.sock.close()
            except OSError:
                pass

    def settled(self, timeout: float = 10.0) -> list[str]:
        """What was received once every accepted connection's handler has finished.

        The client may return before the handler has read its last line; tests that assert on
        ``received`` after a run wait here instead of racing the handler thread.
        """
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout)
        return list(self.received)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for s in self._open:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> LineServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a filtered port ------------------------------------------------------------------------


# connect() times out here, as behind a firewall that drops SYNs, without root or iptables: a
# listening socket with backlog 0 whose accept queue is already full (tcp_abort_on_overflow=0).
class FilteredPort:
    """A loopback port on which ``connect()`` hangs until the client's own timeout.

    ``host``: 127.0.0.1 or ::1; ``port``: a given port number (e.g. the one a server listens on
    at the other family's address), else a free one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(self.family)
        self.listener.bind((host, port))
        self.listener.listen(0)
        self.port = int(self.listener.getsockname()[1])
        # Fill the accept queue (backlog 0 holds one connection) and never accept it.
        self.filler = socket.create_connection((host, self.port), timeout=2)

    def verify(self, wait: float = 0.3) -> bool:
        """True when a connect really times out (not refused, not accepted)."""
        probe = socket.socket(self.family)
        probe.settimeout(wait)
        try:
            probe.connect((self.host, self.port))
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    def close(self) -> None:
        self.filler.close()
        self.listener.close()

    def __enter__(self) -> FilteredPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- fake IMAP and POP3 servers ----------------------------------------------------------------


@dataclass
class MailboxServerConfig:
    """What a fake IMAP/POP3 server offers and how it answers logins."""

    users: dict[str, str] = field(default_factory=lambda: {"alice@example.test": "s3cret"})
    starttls: ssl.SSLContext | None = None  # offer STARTTLS/STLS with this context
    login_disabled_before_tls: bool = False  # IMAP LOGINDISABLED until STARTTLS
    fail_text: str | None = None  # exact refusal text for a bad login
    deny_text: str | None = None  # exact refusal text for a right password (protocol off)
    denied: frozenset[str] = frozenset()  # logins whose access is switched off
    greeting: str | None = None


def imap_handler(cfg: MailboxServerConfig) -> Handler:
    def handle(peer: PeerConn) -> None:
        tls = False
        peer.send(cfg.greeting or "* OK [CAPABILITY IMAP4rev1] test IMAP ready")
        while (line := peer.readline()) is not None:
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            if cmd == "CAPABILITY":
                caps = ["IMAP4rev1"]
                if cfg.starttls and not tls:
                    caps.append("STARTTLS")
                if cfg.login_disabled_before_tls and not tls:
                    caps.append("LOGINDISABLED")
                else:
                    caps.append("AUTH=PLAIN")
                peer.send("* CAPABILITY " + " ".join(caps))
                peer.send(f"{tag} OK CAPABILITY completed")
            elif cmd == "STARTTLS" and cfg.starttls and not tls:
                peer.send(f"{tag} OK Begin TLS negotiation now")
                if not peer.start_tls(cfg.starttls):
                    return
                tls = True
            elif cmd == "LOGIN":
                if cfg.login_disabled_before_tls and not tls:
                    peer.send(f"{tag} NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS")
                    continue
                user, _, password = args.partition(" ")
                user, password = user.strip('"'), password.strip('"')
                _answer_login(peer, cfg, tag, user, password)
            elif cmd == "LOGOUT":
                peer.send("* BYE logging out")
                peer.send(f"{tag} OK LOGOUT completed")
                return
            elif cmd == "NOOP":
                peer.send(f"{tag} OK NOOP completed")
            else:
                peer.send(f"{tag} BAD unknown or unsupported command")

    return handle


def _answer_login(
    peer: PeerConn, cfg: MailboxServerConfig, tag: str, user: str, password: str
) -> None:
    right = cfg.users.get(user) == password
    if right and user in cfg.denied:
        peer.send(f"{tag} NO {cfg.deny_text or '[AUTHENTICATIONFAILED] Authentication failed.'}")
    elif right:
        peer.send(f"{tag} OK Logged in")
    else:
        peer.send(f"{tag} NO {cfg.fail_text or '[AUTHENTICATIONFAILED] Authentication failed.'}")


def pop3_handler(cfg: MailboxServerConfig) -> Handler:
    def handle(peer: PeerConn) -> None:
        tls = False
        user: str | None = None
        peer.send(cfg.greeting or "+OK test POP3 ready")
        while (line := peer.readline()) is not None:
            cmd, _, args = line.partition(" ")
            cmd = cmd.upper()
            if cmd == "CAPA":
                peer.send("+OK Capability list follows")
                peer.send("TOP")
                peer.send("UIDL")
                peer.send("USER")
                peer.send("SASL PLAIN")
                if cfg.starttls and not tls:
                    peer.send("STLS")
                peer.send(".")
            elif cmd == "STLS" and cfg.starttls and not tls:
                peer.send("+OK Begin TLS negotiation")
                if not peer.start_tls(cfg.starttls):
                    return
                tls = True
            elif cmd == "USER":
                user = args.strip()
                peer.send("+OK")
            elif cmd == "PASS":
                right = user is not None and cfg.users.get(user) == args
                if right and user in cfg.denied:
                    peer.send(cfg.deny_text or "-ERR [AUTH] Authentication failed.")
                elif right:
                    peer.send("+OK Logged in.")
                else:
                    peer.send(cfg.fail_text or "-ERR [AUTH] Authentication failed.")
            elif cmd == "QUIT":
                peer.send("+OK Logging out.")
                return
            else:
                peer.send("-ERR Unknown command.")

    return handle


# -- certificates ----------------------------------------------------------------------------


@dataclass
class Certs:
    """A trustme CA and server contexts with valid, expired, wrong-host and self-signed leaves."""

    ca_pem: Path
    valid: ssl.SSLContext
    expired: ssl.SSLContext
    wrong_host: ssl.SSLContext
    self_signed: ssl.SSLContext
    not_yet_valid: ssl.SSLContext
    expiring: Callable[[int], ssl.SSLContext]  # a leaf that expires in N days


def _server_ctx(cert: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)  # type: ignore[attr-defined]
    return ctx


def make_certs(directory: Path) -> Certs:
    import trustme

    ca = trustme.CA()
    ca_pem = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def leaf(**kw: object) -> ssl.SSLContext:
        return _server_ctx(ca.issue_cert("127.0.0.1", "localhost", "mail.example.test", **kw))

    other_ca = trustme.CA()  # nobody trusts this one: a self-signed server as far as we know
    return Certs(
        ca_pem=ca_pem,
        valid=leaf(),
        expired=leaf(not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=2)),
        wrong_host=_server_ctx(ca.issue_cert("other.example.net")),
        self_signed=_server_ctx(other_ca.issue_cert("127.0.0.1", "localhost")),
        not_yet_valid=leaf(
            not_before=now + dt.timedelta(days=3), not_after=now + dt.timedelta(days=300)
        ),
        expiring=lambda days: leaf(
            not_before=now - dt.timedelta(days=30),
            not_after=now + dt.timedelta(days=days, hours=12),
        ),
    )
