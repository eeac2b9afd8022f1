"""Peers and helpers for the login tests (no tests here; imported by test_auth_*/test_safety_*).

* ``RecordingController``: an aiosmtpd Controller whose server records every raw line a client
  sends (commands, AUTH continuations, anything after DATA), so tests can assert what never
  arrived.
* ``authenticator(users)``: aiosmtpd's ``authenticator=`` hook for PLAIN and LOGIN.
* ``YandexLike`` refuses MAIL before AUTH and an unowned sender at MAIL, with Yandex's texts;
  ``PostfixLike`` accepts MAIL and refuses at RCPT, with Postfix's texts.
* ``drive(target, config, ...)``: one Session with the real login stage, observations out.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from maildiag.address import parse_address
from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Source, Target
from maildiag.probes import auth
from maildiag.probes.session import Env, Session

PASSWORD = "Tr0ub4dor&3-zxq"  # distinctive: a substring hit cannot be an accident
ALICE = "alice@example.test"

# What a mail client must never send while we diagnose (SPEC: safety).
FORBIDDEN_SMTP = ("DATA", "BDAT")
FORBIDDEN_IMAP = (
    "SELECT",
    "STORE",
    "EXPUNGE",
    "APPEND",
    "COPY",
    "MOVE",
    "CREATE",
    "DELETE",
    "RENAME",
)
FORBIDDEN_POP3 = ("RETR", "DELE")


def secret_forms(login: str, password: str = PASSWORD) -> list[str]:
    """The password and every base64 form an AUTH exchange carries."""
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    return [
        password,
        b64(password),
        b64(f"\0{login}\0{password}"),
        b64(f"{login}\0{login}\0{password}"),
    ]


class RecordingSMTP(SMTP):
    def __init__(self, handler: Any, *, record: list[str], **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._record = record

    def _cb_client_connected(self, reader: Any, writer: Any) -> None:
        super()._cb_client_connected(reader, writer)
        record = self._record
        until, line = reader.readuntil, reader.readline

        async def readuntil(*a: Any, **kw: Any) -> bytes:
            data: bytes = await until(*a, **kw)
            record.append(data.decode("utf-8", "replace").rstrip("\r\n"))
            return data

        async def readline() -> bytes:
            data: bytes = await line()
            record.append(data.decode("utf-8", "replace").rstrip("\r\n"))
            return data

        reader.readuntil, reader.readline = readuntil, readline


class RecordingController(Controller):
    def __init__(self, handler: Any, **kw: Any) -> None:
        self.received: list[str] = []
        super().__init__(handler, **kw)

    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, record=self.received, **self.SMTP_kwargs)

    def commands(self) -> list[str]:
        return [line.split(" ", 1)[0].upper() for line in self.received]


def authenticator(users: dict[str, str]) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=data)

    return check


def _login_of(session: Any) -> str | None:
    data = getattr(session, "auth_data", None)
    return data.login.decode() if isinstance(data, LoginPassword) else None


class Recording:
    """Records every envelope step that reached the handler; DATA must never arrive."""

    def __init__(self) -> None:
        self.data_calls = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_calls += 1
        return "554 5.6.0 this test server never takes a message"


class YandexLike(Recording):
    """smtp.yandex.ru: MAIL before AUTH and MAIL of a foreign sender are refused at MAIL."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Send auth command first."
        if address.lower() != (_login_of(session) or "").lower():
            return "553 5.7.1 Sender address rejected: not owned by auth user."
        envelope.mail_from = address
        return "250 2.1.0 <" + address + "> ok"


class PostfixLike(Recording):
    """Postfix with reject_sender_login_mismatch: everything is refused only at RCPT."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        login = _login_of(session)
        sender = envelope.mail_from or ""
        if login is None:
            return f"553 5.7.1 <{sender}>: Sender address rejected: not logged in"
        if sender.lower() != login.lower():
            return f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"


def smtp_peer(
    certs: Any,
    handler: Any,
    *,
    mode: str = "starttls",
    users: dict[str, str] | None = None,
    **kw: Any,
) -> RecordingController:
    """A started RecordingController on 127.0.0.1 (the caller stops it)."""
    from peers import free_port

    options: dict[str, Any] = {"hostname": "127.0.0.1", "port": free_port()}
    if mode == "ssl":
        options["ssl_context"] = certs.valid
    elif mode == "starttls":
        options["tls_context"] = certs.valid
    if users is not None:
        options["authenticator"] = authenticator(users)
    options.update(kw)
    controller = RecordingController(handler, **options)
    controller.start()
    return controller


def config(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {"address": ALICE, "timeout": 5.0, "check_clock": False}
    base.update(kw)
    return RunConfig(**base)


def target(service: Service, port: int, security: Security = Security.STARTTLS) -> Target:
    return Target(service, "127.0.0.1", port, security, Source.EXPLICIT)


def drive(
    targets: Target | Sequence[Target], cfg: RunConfig, *, provider: Any = None, cross: bool = True
) -> list[Observation]:
    """Run one Session per target (sequentially) with the real login stage."""
    if isinstance(targets, Target):
        targets = [targets]
    out: list[Observation] = []
    redact = auth.Redactor(cfg.password)
    stage = auth.make_login_stage(cfg, parse_address(cfg.address), provider, redact)
    for t in targets:
        Session(t, Env(cfg, out.append, login_stage=stage, redact=redact)).probe()
    return auth.cross_check(out) if cross else out


def by_check(observations: Sequence[Observation]) -> dict[str, Observation]:
    return {o.check: o for o in observations}


def signals(obs: Observation) -> list[str]:
    return [p.signal for p in obs.problems]
