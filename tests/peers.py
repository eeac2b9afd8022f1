"""Real loopback peers for tests: a scripted line server, fake SMTP/IMAP/POP3 servers,
certificates.

Everything listens on 127.0.0.1 port 0 and runs in daemon threads. Every peer records what it
received (``peer.received``), so tests can assert what maildiag never sends.

The fake servers take OAuth2 logins (SASL XOAUTH2 and OAUTHBEARER) when given an ``OAuthConfig``:
it holds the tokens a provider would have issued (``Grant``: whose, which scopes, expired or not)
and answers as the providers do — an error challenge (base64 JSON: an HTTP status for XOAUTH2, an
RFC 6750 code for OAUTHBEARER, as Dovecot and Google send them) that waits for the client's dummy
response before the final refusal, or (``challenge=False``, Microsoft) the refusal at once; a
token of another user accepted and the mailbox then refused (``not_connected``, Microsoft); or
OAuth switched off for the protocol (``disabled_text``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
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


# -- OAuth2 (XOAUTH2, OAUTHBEARER) ------------------------------------------------------------

GMAIL_SCOPE = "https://mail.google.com/"


@dataclass(frozen=True)
class Grant:
    """An access token as its issuer knows it: whose mailbox, which scopes, still valid or not."""

    user: str
    scopes: frozenset[str] = frozenset({GMAIL_SCOPE})
    expired: bool = False


# XOAUTH2 quotes an HTTP status for the RFC 6750 error (Dovecot's mech-oauth2.c does the same)
_HTTP_STATUS = {"invalid_token": "401", "insufficient_scope": "403", "invalid_request": "400"}


@dataclass
class OAuthConfig:
    """How a fake server takes OAuth2 tokens."""

    grants: dict[str, Grant] = field(default_factory=dict)  # token -> grant
    scope: str = GMAIL_SCOPE  # the scope this server requires
    mechanisms: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER")
    challenge: bool = True  # False: refuse at once, without an error challenge (Microsoft)
    not_connected: bool = False  # accept another user's token, then refuse the mailbox (IMAP)
    disabled_text: str | None = None  # OAuth off for this protocol: every token refused so
    refusal: str | None = None  # the final refusal after the challenge (default per protocol)
    openid_configuration: str | None = None
    error_fields: dict[str, str] = field(default_factory=dict)  # more fields in the challenge
    http_status_for_xoauth2: bool = True  # False: RFC codes for XOAUTH2 too
    # every challenge sent and the client's answer to it
    answers: list[tuple[str, str]] = field(default_factory=list)

    def verdict(self, mechanism: str, response: str) -> tuple[str | None, str | None]:
        """(user, None) when the token opens ``user``'s mailbox; (None, error) otherwise, where
        error is the RFC 6750 code."""
        try:
            text = base64.b64decode(response, validate=True).decode("utf-8")
        except ValueError:
            return None, "invalid_request"
        fields = text.split("\x01")
        if len(fields) < 3 or fields[-2:] != ["", ""]:
            return None, "invalid_request"
        user = ""
        if mechanism == "XOAUTH2":
            user = fields[0][5:] if fields[0].startswith("user=") else ""
        else:
            head = fields[0].split(",")
            if head[0] != "n" or len(head) < 3 or not head[1].startswith("a="):
                return None, "invalid_request"
            user = head[1][2:].replace("=2C", ",").replace("=3D", "=")
        auth = [f for f in fields if f.startswith("auth=Bearer ")]
        if not user or len(auth) != 1:
            return None, "invalid_request"
        grant = self.grants.get(auth[0][len("auth=Bearer ") :])
        if grant is None or grant.expired:
            return None, "invalid_token"
        if self.scope not in grant.scopes:
            return None, "insufficient_scope"
        if grant.user != user and not self.not_connected:
            return None, "invalid_request"  # Google's 400 for a token of another account
        return grant.user if grant.user == user else "", None

    def challenge_for(self, mechanism: str, error: str) -> str:
        status = error
        body: dict[str, str] = {}
        if mechanism == "XOAUTH2" and self.http_status_for_xoauth2:
            status = _HTTP_STATUS[error]
            body = {"status": status, "schemes": "bearer", "scope": self.scope}
        else:
            body = {"status": status, "scope": self.scope}
        if self.openid_configuration:
            body["openid-configuration"] = self.openid_configuration
        body.update(self.error_fields)
        return base64.b64encode(json.dumps(body).encode()).decode()

    def dummy_ok(self, mechanism: str, answer: str) -> bool:
        """The client's answer to an error challenge is the dummy its mechanism prescribes."""
        return answer == ("AQ==" if mechanism == "OAUTHBEARER" else "")


def sasl_oauth(
    peer: PeerConn,
    cfg: OAuthConfig,
    mechanism: str,
    initial: str | None,
    *,
    ask: str,
    refusal: str,
) -> tuple[str | None, str | None]:
    """Run one OAuth2 SASL exchange; ``ask`` is the protocol's continuation prefix ("334 ", "+ ").

    Returns (user, None) when the token is accepted (user "" for another user's token that a
    ``not_connected`` server takes), or (None, reply) with the final refusal already sent, or
    (None, None) when the client went away.
    """
    if initial is None:
        peer.send(ask.rstrip() + " ")
        initial = peer.readline()
        if initial is None:
            return None, None
        if initial == "*":
            return None, refusal
    if cfg.disabled_text is not None:
        return None, cfg.disabled_text
    user, error = cfg.verdict(mechanism, initial)
    if error is None:
        return user, None
    if not cfg.challenge:
        return None, cfg.refusal or refusal
    challenge = cfg.challenge_for(mechanism, error)
    peer.send(ask + challenge)
    answer = peer.readline()
    if answer is None:
        return None, None
    cfg.answers.append((challenge, answer))
    if not cfg.dummy_ok(mechanism, answer):
        return None, "BAD-DUMMY"
    return None, cfg.refusal or refusal


def oauth_login(
    peer: PeerConn,
    cfg: OAuthConfig,
    args: str,
    tag: str,
    *,
    ask: str,
    refusal: str,
    accepted: str,
    bad_dummy: str,
    unsupported: str,
) -> tuple[str | None, bool]:
    """One ``AUTH``/``AUTHENTICATE <mechanism> [initial response]`` with a token, its replies
    sent (each line after ``tag``, IMAP's). Returns (the user logged in or None, whether the
    client is still there)."""

    def say(text: str) -> None:
        for out in text.split("\n"):
            peer.send(f"{tag} {out}" if tag else out)

    mechanism, _, initial = args.partition(" ")
    mechanism = mechanism.upper()
    if mechanism not in cfg.mechanisms:
        say(unsupported)
        return None, True
    user, answer = sasl_oauth(peer, cfg, mechanism, initial or None, ask=ask, refusal=refusal)
    if user is not None:
        say(accepted)
        return user, True
    if answer is None:
        return None, False
    say(bad_dummy if answer == "BAD-DUMMY" else answer)
    return None, True


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
    oauth: OAuthConfig | None = None  # take OAuth2 tokens too (AUTHENTICATE / AUTH)
    sasl_ir: bool = True  # IMAP: announce SASL-IR (the initial response with the command)


def imap_handler(cfg: MailboxServerConfig) -> Handler:
    def handle(peer: PeerConn) -> None:
        tls = False
        connected = True  # False after a not_connected OAuth2 login
        peer.send(cfg.greeting or "* OK [CAPABILITY IMAP4rev1] test IMAP ready")
        while (line := peer.readline()) is not None:
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            if cmd == "CAPABILITY":
                peer.send("* CAPABILITY " + " ".join(_imap_capabilities(cfg, tls)))
                peer.send(f"{tag} OK CAPABILITY completed")
            elif cmd == "AUTHENTICATE" and cfg.oauth is not None:
                who, alive = oauth_login(peer, cfg.oauth, args, tag, **IMAP_OAUTH_REPLIES)
                if not alive:
                    return
                if who is not None:
                    connected = bool(who)
            elif cmd == "STATUS":
                if connected:
                    peer.send("* STATUS INBOX (MESSAGES 1)")
                    peer.send(f"{tag} OK STATUS completed.")
                else:
                    peer.send(f"{tag} BAD User is authenticated but not connected.")
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


def _imap_capabilities(cfg: MailboxServerConfig, tls: bool) -> list[str]:
    caps = ["IMAP4rev1"]
    if cfg.starttls and not tls:
        caps.append("STARTTLS")
    if cfg.login_disabled_before_tls and not tls:
        caps.append("LOGINDISABLED")
    else:
        caps.append("AUTH=PLAIN")
    if cfg.oauth is not None:
        caps += [f"AUTH={m}" for m in cfg.oauth.mechanisms]
        caps += ["SASL-IR"] if cfg.sasl_ir else []
    return caps


IMAP_OAUTH_REPLIES = {
    "ask": "+ ",
    "refusal": "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
    "accepted": "OK AUTHENTICATE completed.",
    "bad_dummy": "BAD Invalid SASL argument.",
    "unsupported": "NO [CANNOT] Unsupported authentication mechanism",
}
POP3_OAUTH_REPLIES = {
    "ask": "+ ",
    "refusal": "-ERR [AUTH] Invalid credentials.",
    "accepted": "+OK Logged in.",
    "bad_dummy": "-ERR [AUTH] Invalid SASL argument.",
    "unsupported": "-ERR Unsupported authentication mechanism.",
}


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
                mechanisms = cfg.oauth.mechanisms if cfg.oauth is not None else ()
                peer.send(" ".join(("SASL", "PLAIN", *mechanisms)))
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
            elif cmd == "AUTH" and cfg.oauth is not None:
                _, alive = oauth_login(peer, cfg.oauth, args, "", **POP3_OAUTH_REPLIES)
                if not alive:
                    return
            elif cmd == "QUIT":
                peer.send("+OK Logging out.")
                return
            else:
                peer.send("-ERR Unknown command.")

    return handle


# -- a fake SMTP submission server -------------------------------------------------------------

GMAIL_BAD_CREDENTIALS = (
    "535-5.7.8 Username and Password not accepted. Learn more at",
    "535 5.7.8 https://support.google.com/mail/?p=BadCredentials",
)


@dataclass
class SmtpServerConfig:
    """What a fake submission server offers: AUTH PLAIN for ``users``, OAuth2 with ``oauth``;
    MAIL FROM only the logged-in user's own address; never a message (DATA is refused)."""

    users: dict[str, str] = field(default_factory=dict)
    oauth: OAuthConfig | None = None
    starttls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    data_calls: int = 0


SMTP_OAUTH_REPLIES = {
    "ask": "334 ",
    "refusal": "\n".join(GMAIL_BAD_CREDENTIALS),
    "accepted": "235 2.7.0 Accepted",
    "bad_dummy": "501 5.5.2 Cannot Decode response",
    "unsupported": "504 5.7.4 Unrecognized authentication type",
}


def _ehlo(cfg: SmtpServerConfig, tls: bool) -> list[str]:
    items = ["mail.example.test", "SIZE 35882577", "8BITMIME"]
    if cfg.starttls is not None and not tls:
        items.append("STARTTLS")
    mechs = ["PLAIN", *(cfg.oauth.mechanisms if cfg.oauth else ())]
    items += ["AUTH " + " ".join(mechs), "ENHANCEDSTATUSCODES"]
    return [("250 " if i == len(items) - 1 else "250-") + item for i, item in enumerate(items)]


def _smtp_auth(peer: PeerConn, cfg: SmtpServerConfig, args: str) -> tuple[str | None, bool]:
    """AUTH PLAIN for ``cfg.users``, or OAuth2: (the user logged in or None, client still there)."""
    mech, _, initial = args.partition(" ")
    if mech.upper() == "PLAIN":
        fields = base64.b64decode(initial or "").decode().split("\0")
        ok = len(fields) == 3 and cfg.users.get(fields[1]) == fields[2]
        peer.send("235 2.7.0 Accepted" if ok else GMAIL_BAD_CREDENTIALS[1])
        return (fields[1] if ok else None), True
    if cfg.oauth is None:
        peer.send(SMTP_OAUTH_REPLIES["unsupported"])
        return None, True
    return oauth_login(peer, cfg.oauth, args, "", **SMTP_OAUTH_REPLIES)


def _mail(args: str, user: str | None) -> str:
    sender = args.partition(":")[2].strip().strip("<>").split(">")[0]
    if user is None:
        return "530 5.7.0 Authentication required"
    if sender.lower() != user.lower():
        return "553 5.7.1 Sender address rejected: not owned by auth user."
    return "250 2.1.0 OK"


def smtp_handler(cfg: SmtpServerConfig) -> Handler:
    simple = {
        "RCPT": "250 2.1.5 OK",
        "RSET": "250 2.0.0 OK",
        "DATA": "554 5.5.1 this test server never takes a message",
    }

    def handle(peer: PeerConn) -> None:
        tls = False
        user: str | None = None
        peer.send("220 mail.example.test ESMTP test server")
        while (line := peer.readline()) is not None:
            verb, _, args = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                for out in _ehlo(cfg, tls):
                    peer.send(out)
            elif verb == "STARTTLS" and cfg.starttls is not None and not tls:
                peer.send("220 2.0.0 Ready to start TLS")
                if not peer.start_tls(cfg.starttls):
                    return
                tls = True
            elif verb == "AUTH":
                who, alive = _smtp_auth(peer, cfg, args)
                if not alive:
                    return
                user = who if who is not None else user
            elif verb == "MAIL":
                peer.send(_mail(args, user))
            elif verb in simple:
                cfg.data_calls += verb == "DATA"
                peer.send(simple[verb])
            elif verb == "QUIT":
                peer.send("221 2.0.0 closing connection")
                return
            else:
                peer.send("502 5.5.1 Unrecognized command")

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
