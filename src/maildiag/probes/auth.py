"""The login stage: ``smtp.auth``, ``smtp.sender``, ``imap.auth``, ``pop3.auth``.

The session hands us its connection after the final capabilities (``LoginState``); we run on
that same connection and emit the remaining checks of the target.

Without a password, ``smtp.auth`` learns whether the server demands AUTH by sending
``MAIL FROM`` and ``RCPT TO`` (the user's own address) unauthenticated — Yandex refuses at MAIL,
Postfix only at RCPT — and the other login checks are ``skip``. With a password we log in once
per service per run (no retries: a locked account is worse than an incomplete report), and
``smtp.sender`` tries ``MAIL FROM:<--from>`` / ``RCPT TO:<address>`` for that login.

Safety (SPEC "what never happens"):

* SMTP goes at most to MAIL/RCPT, then RSET and QUIT; never DATA or BDAT. IMAP sends only LOGIN
  or AUTHENTICATE and LOGOUT; POP3 only USER/PASS or AUTH and QUIT.
* A password goes out only over TLS with a verified certificate, or in clear text when the user
  asked for ``/plain`` (then ``auth.plain_connection`` says so).
* The password and every encoding of it we send are redacted from the transcript lines we
  write (``shown=``); what the server says after it is masked on arrival, and every text we put
  into an observation once more (``maildiag.redact``, which lists what is masked where).
* A 3xx reply to MAIL or RCPT (354 "start mail input") is a protocol violation: nothing more is
  sent on that connection, since the server would take it for a message.

With an OAuth2 access token (``--oauth2-token-env``) instead of a password the logins use SASL
XOAUTH2 or OAUTHBEARER (``maildiag.oauth2``), whichever the server offers (SMTP ``AUTH``, IMAP
``AUTH=``, POP3 ``SASL``; XOAUTH2 first), under every rule above. The initial response goes with
the command when the line allows it (IMAP with SASL-IR; SMTP up to 512 octets, RFC 4954 4; POP3
up to 255, RFC 5034 4), else after the server's empty challenge. A server that refuses the token
sends an error challenge (base64 JSON, RFC 7628 3.2.2): it is decoded, answered with the dummy
response, and the final refusal read; the refusal's text for the rules is the dialogue as it
went (``AUTH XOAUTH2 ********``, the challenge as JSON, the reply), so ``explain`` of the same
dialogue agrees, and the decoded fields are the problem's params and ``data.oauth2_error``. After
an IMAP OAuth2 login ``STATUS INBOX (MESSAGES)`` (read-only) proves the mailbox is reachable:
Microsoft 365 accepts a token issued for another user and only then answers "User is
authenticated but not connected".
"""

from __future__ import annotations

import base64
import hmac
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from maildiag import oauth2
from maildiag.address import Address, AddressError, parse_address
from maildiag.config import MAX_REPLY_LINES, RunConfig
from maildiag.errors import NetError, ProtocolViolation, StepTimeout, TooLong, UnsafeLine
from maildiag.models import LoginFacts, Observation, Problem, Security, Service, Status, Summary
from maildiag.probes import login_checks, smtp
from maildiag.probes.base import Reply
from maildiag.probes.imap import Imap, parse_tagged
from maildiag.probes.pop3 import Pop3, parse_status
from maildiag.probes.session import LoginState
from maildiag.redact import MASK, Redactor, oauth2_forms

__all__ = ["MASK", "Redactor", "cross_check", "make_login_stage", "make_plan", "make_server_stage"]

# Mechanisms we can speak, best first. Over TLS PLAIN is simplest and universal; in clear text
# (only when the user asked for /plain) CRAM-MD5 keeps the password itself off the wire.
_OVER_TLS = ("PLAIN", "LOGIN", "CRAM-MD5")
_IN_CLEAR = ("CRAM-MD5", "PLAIN", "LOGIN")

# The longest command line with an initial response (CRLF included): SMTP's 512 octets (RFC 4954
# 4 keeps AUTH under RFC 5321's limit), POP3's 255 (RFC 5034 4). IMAP has no such limit (SASL-IR).
_SMTP_LINE = 512
_POP3_LINE = 255
# After an IMAP OAuth2 login: a read-only question only a connected mailbox can answer.
_MAILBOX_PROBE = "STATUS INBOX (MESSAGES)"

# An unauthenticated MAIL/RCPT refusal that is about TLS, not about AUTH (RFC 3207, 5.7.11).
_TLS_DEMAND = re.compile(r"starttls|\btls\b|encrypt|5\.7\.11|privacy", re.I)
# ... and one that means "authenticate first" (Yandex "Send auth command first", Postfix
# "not logged in", "Relay access denied" for a submission server, RFC 4954 530 5.7.0).
_AUTH_DEMAND = re.compile(
    r"auth|logged in|log ?in|sign in|relay access denied|relaying denied|relay not permitted|"
    r"not permitted to relay|access denied|5\.7\.0",
    re.I,
)


# -- secrets -----------------------------------------------------------------------------------


def _b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def plain_response(login: str, password: str) -> str:
    """RFC 4616: authzid (empty) NUL authcid NUL passwd, base64."""
    return _b64(f"\0{login}\0{password}")


def cram_md5_response(login: str, password: str, challenge_b64: str) -> str:
    """RFC 2195: base64(login SP hex(HMAC-MD5(password, challenge)))."""
    try:
        challenge = base64.b64decode(challenge_b64.strip(), validate=True)
    except ValueError as exc:
        raise ProtocolViolation("the CRAM-MD5 challenge is not base64") from exc
    digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
    return _b64(f"{login} {digest}")


# -- the plan: who logs in as what ----------------------------------------------------------


@dataclass
class LoginPlan:
    """What every login of one run uses; built once from the config and the provider."""

    address: Address
    password: str | None = field(repr=False)
    sender: str
    given_login: str | None
    provider: Any = field(default=None, repr=False)
    custom_domain: bool = False
    redact: Redactor = field(default_factory=lambda: Redactor(None), repr=False)
    oauth2_token: str | None = field(default=None, repr=False)  # instead of the password

    @property
    def has_secret(self) -> bool:
        return self.password is not None or self.oauth2_token is not None

    def expected_login(self, service: Service) -> tuple[str | None, str | None]:
        """The provider's login (and its form: address|localpart) for this service, if known."""
        p = self.provider
        if p is None or not callable(getattr(p, "login_for", None)):
            return None, None
        try:
            login = p.login_for(self.address, self.custom_domain, service)
        except TypeError:  # an older provider model without the per-service form
            try:
                login = p.login_for(self.address, self.custom_domain)
            except Exception:  # noqa: BLE001 - a provider quirk must not cost the login check
                return None, None
        except Exception:  # noqa: BLE001
            return None, None
        if not isinstance(login, str) or not login:
            return None, None
        form = "address" if "@" in login else "localpart"
        return login, form

    def login(self, service: Service) -> str:
        if self.given_login:
            return self.given_login
        expected, _ = self.expected_login(service)
        return expected or self.address.original


def make_plan(
    config: RunConfig, address: Address, provider: Any, redact: Redactor | None = None
) -> LoginPlan:
    sender = config.sender or address.original
    custom = False
    if provider is not None:
        domains = {str(d).lower() for d in (getattr(provider, "domains", ()) or ())}
        custom = (
            bool(domains) and address.domain not in domains and address.ascii_domain not in domains
        )
    return LoginPlan(
        address=address,
        password=config.password,
        sender=sender,
        given_login=config.login,
        provider=provider,
        custom_domain=custom,
        redact=redact if redact is not None else Redactor(config.password, config.oauth2_token),
        oauth2_token=config.oauth2_token,
    )


def make_login_stage(
    config: RunConfig, address: Address, provider: Any, redact: Redactor | None = None
) -> Callable[[LoginState], None]:
    """The stage every session of this run calls; one login attempt per service per run.

    ``redact``: the run's redactor, shared with the sessions' connections (``Env.redact``).
    """
    plan = make_plan(config, address, provider, redact)
    lock = threading.Lock()
    tried: dict[Service, str] = {}

    def stage(state: LoginState) -> None:
        service = state.target.service
        first = True
        # a session whose password or token could not go out (an unverified certificate, no TLS)
        # did not use the attempt: an alternative server of the service may still make it
        if plan.has_secret and _secret_may_go_out(state):
            with lock:
                first = service not in tried
                if first:
                    tried[service] = state.target.label
        if not first:
            login = _Login(state, plan)
            login.goodbye()
            login.skip_all(Summary("skip.login_already_tried", {"where": tried[service]}))
            return
        _Login(state, plan).check()

    return stage


def make_server_stage() -> Callable[[LoginState], None]:
    """The login stage of a server checked without a mailbox (``check HOST[:PORT]``).

    ``smtp.auth`` reports the AUTH mechanisms the server offers (after STARTTLS when the port has
    it) and sends nothing more: whether the server *requires* AUTH shows only at MAIL FROM or
    RCPT TO, and without a mailbox there is no address the server is known to accept — a made-up
    one (postmaster@HOST) would test its recipient policy for that name, not its login, and on
    port 25 accepting mail for its own domains without AUTH is right. So no envelope command (and
    never DATA) goes to a server checked this way. The other login checks are ``skip``.
    """

    def stage(state: LoginState) -> None:
        session = state.session
        try:
            state.dialect.quit(state.conn)
        except (NetError, ProtocolViolation):
            pass
        reason = Summary("skip.no_mailbox")
        if state.target.service is Service.SMTP:
            offered = state.caps.auth_mechanisms()
            data = {"auth_offered": offered, "tls": state.tls}
            if offered:
                summary = Summary("auth.offered", {"mechanisms": " ".join(offered)})
            else:
                summary = Summary("auth.not_offered")
            session.emit("auth", Status.OK, summary, data=data)
        for name in login_checks(state.target.service):
            if f"{state.target.service}.{name}" not in session.emitted:
                session.emit(name, Status.SKIP, reason)

    return stage


def _secret_may_go_out(state: LoginState) -> bool:
    """What ``_Login.may_send_password`` allows: verified TLS, or clear text asked for."""
    if state.tls:
        return state.trusted
    return state.target.security is Security.PLAIN


# -- one session's login checks ---------------------------------------------------------------


class _Login:
    def __init__(self, state: LoginState, plan: LoginPlan) -> None:
        self.state = state
        self.plan = plan
        self.conn = state.conn
        self.session = state.session
        self.service = state.target.service
        self.redact = plan.redact
        self.login = plan.login(self.service)
        if plan.password is not None:
            pw = plan.password
            sasl = (
                f"\0{self.login}\0{pw}",
                f"{self.login}\0{self.login}\0{pw}",
                f"{self.login}\0{pw}",
            )
            forms = [_b64(f) for f in sasl]
            self.redact.add(*forms, *(f.rstrip("=") for f in forms))
        if plan.oauth2_token is not None:
            t = state.target
            self.redact.add(*oauth2_forms(plan.oauth2_token, self.login, t.host, t.port))
        self.emitted: set[str] = set()
        # a 3xx came to MAIL/RCPT: the server waits for message text (354) or a continuation,
        # so whatever we sent now would be read as that; only closing the connection is safe
        self.in_message = False

    # -- emitting --------------------------------------------------------------------------
    def emit(
        self,
        name: str,
        status: Status,
        summary: Summary,
        *,
        data: dict[str, Any] | None = None,
        problems: Sequence[Problem] = (),
        facts: LoginFacts | None = None,
    ) -> None:
        self._scrub_transcript()
        r = self.redact
        self.emitted.add(name)
        if facts is not None:
            data = {**(data or {}), **_login_data(facts)}
        self.session.emit(
            name,
            status,
            Summary(summary.key, r.value(summary.params)),
            data=r.value(data or {}),
            problems=tuple(Problem(p.signal, r(p.text), r.value(dict(p.params))) for p in problems),
            facts=facts,
        )

    def _scrub_transcript(self) -> None:
        """Our ``shown=`` lines are already masked; this catches a server echoing a secret."""
        t = self.session.transcript
        for i, line in enumerate(t):
            clean = self.redact(line)
            if clean != line:
                t[i] = clean

    def skip_all(self, reason: Summary) -> None:
        for name in login_checks(self.service):
            if name not in self.emitted:
                self.emit(name, Status.SKIP, reason)

    def problem(self, signal: str, text: str = "", **extra: Any) -> Problem:
        return self.session.problem(signal, text, **extra)

    def broke(self, exc: NetError | ProtocolViolation, name: str) -> None:
        signal = exc.signal if isinstance(exc, NetError) else "greeting.wrong_protocol"
        if isinstance(exc, StepTimeout):
            signal = "connect.timeout"
        elif isinstance(exc, UnsafeLine):
            signal = "check.internal_error"  # our refusal, not the server's doing
        check = f"{self.service}.{name}"
        if isinstance(exc, UnsafeLine):
            self.session.skip(Summary("skip.internal_error"))
        else:
            self.session.skip(Summary("skip.broke_off", {"check": check}))
        self.emit(
            name,
            Status.FAIL,
            self.session.net(exc),
            problems=(
                self.problem(
                    signal,
                    str(exc),
                    timeout=f"{self.session.env.config.timeout:g}",
                    expected=str(self.service),
                    heard=Summary("heard.broken_reply"),
                ),
            ),
        )

    # -- the sequence ----------------------------------------------------------------------
    def check(self) -> None:
        self.session.step("auth")
        try:
            if self.service is Service.SMTP:
                if not self.plan.has_secret:
                    self.smtp_unauthenticated()
                else:
                    self.smtp_login_and_sender()
            elif not self.plan.has_secret:
                self.goodbye()
                self.emit(
                    "auth",
                    Status.SKIP,
                    Summary("auth.needs_password"),
                )
            elif self.plan.oauth2_token is not None:
                self.mailbox_oauth2_login()
            elif self.service is Service.IMAP:
                self.imap_login()
            else:
                self.pop3_login()
        except (NetError, ProtocolViolation) as exc:
            pending = [n for n in login_checks(self.service) if n not in self.emitted]
            if pending:
                self.broke(exc, pending[0])
        finally:
            self.skip_all(self.session.skip_reason or Summary("skip.login_unfinished"))

    def goodbye(self) -> None:
        """RSET (SMTP) and QUIT/LOGOUT, best effort: the session closes the socket anyway."""
        if self.in_message:
            return  # after a 354 even RSET would be message text
        try:
            if self.service is Service.SMTP:
                smtp.command(self.conn, "RSET")
            self.state.dialect.quit(self.conn)
        except (NetError, ProtocolViolation):
            pass

    def may_send_password(self) -> bool:
        """Only over verified TLS, or in clear text when the user asked for /plain."""
        s = self.state
        if s.tls and s.trusted:
            return True
        token = "_token" if self.plan.oauth2_token is not None else ""
        if s.tls:
            reason = Summary("skip.cert_unverified" + token)
        elif s.target.security is Security.PLAIN:
            return True
        else:
            reason = Summary("skip.not_encrypted" + token)
        self.session.skip(reason)
        self.goodbye()
        self.skip_all(reason)
        return False

    def clear_text_problems(self) -> list[Problem]:
        if self.state.tls:
            return []
        return [self.problem("auth.plain_connection", "", login=self.login)]

    def refusal_problems(self, reply_text: str, **extra: Any) -> list[Problem]:
        """The server's refusal for the rules, plus the login form the provider expects."""
        problems = [self.problem("reply", reply_text, login=self.login, **extra)]
        expected, form = self.plan.expected_login(self.service)
        if expected is not None and expected != self.login:
            problems.append(
                self.problem(
                    "auth.login_form",
                    reply_text,
                    expected_login=expected,
                    form=form,
                    login=self.login,
                )
            )
        return problems

    def base_data(self, **extra: Any) -> dict[str, Any]:
        return {
            "login": self.login,
            "tls": self.state.tls,
            "mechanisms": self.state.caps.auth_mechanisms(),
            **extra,
        }

    # -- SMTP ------------------------------------------------------------------------------
    def mail_path(self, text: str) -> str:
        """``<addr>`` with the domain in A-labels, plus SMTPUTF8 when the local part needs it."""
        try:
            a = parse_address(text)
            path = f"<{a.local}@{a.ascii_domain}>"
            needs_utf8 = not a.local.isascii()
        except AddressError:
            path, needs_utf8 = f"<{text}>", not text.isascii()
        if needs_utf8 and self.state.caps.has("SMTPUTF8"):
            path += " SMTPUTF8"
        return path

    def envelope(self, sender: str) -> tuple[str, Reply]:
        """MAIL FROM then, if accepted, RCPT TO the user's own address: where it stopped."""
        reply = self.envelope_reply("MAIL", f"MAIL FROM:{self.mail_path(sender)}")
        if not reply.ok:
            return "MAIL", reply
        rcpt = self.envelope_reply("RCPT", f"RCPT TO:{self.mail_path(self.plan.address.original)}")
        return "RCPT", rcpt

    def envelope_reply(self, stage: str, line: str) -> Reply:
        """MAIL or RCPT: 2xx accepts, 4xx/5xx refuses; 3xx (354) is no answer to either."""
        reply = smtp.command(self.conn, line)
        if reply.code is not None and 300 <= reply.code < 400:
            self.in_message = True
            raise ProtocolViolation(
                f"the server answered {stage} with {reply.code}, a reply that belongs to other "
                f"commands: {_first(reply)}"
            )
        return reply

    def smtp_unauthenticated(self) -> None:
        stage, reply = self.envelope(self.plan.address.original)
        data: dict[str, Any] = {
            "mechanisms": self.state.caps.auth_mechanisms(),
            "tls": self.state.tls,
        }
        self.goodbye()
        if reply.ok:
            data["auth_required"] = False
            self.emit(
                "auth",
                Status.OK,
                Summary("auth.not_required"),
                data=data,
            )
        elif not _TLS_DEMAND.search(reply.text) and (
            reply.code == 530 or _AUTH_DEMAND.search(reply.text)
        ):
            data.update(auth_required=True, refused_at=stage, reply=reply.text)
            problems = [self.problem("auth.required", reply.text, refused_at=stage)]
            if self.auth_only_after_starttls():
                # the login it demands cannot happen on this connection (Exim's usual setup)
                caps = self.state.caps.reply
                problems.insert(
                    0, self.problem("auth.plaintext_refused", caps.text if caps else "")
                )
            self.emit(
                "auth",
                Status.FAIL if len(problems) > 1 else Status.OK,
                Summary("auth.required", {"stage": stage, "reply": _first(reply)}),
                data=data,
                problems=problems,
            )
        else:
            data.update(auth_required=None, refused_at=stage, reply=reply.text)
            status = Status.WARN if reply.code is not None and reply.code < 500 else Status.FAIL
            self.emit(
                "auth",
                status,
                Summary("envelope.refused", {"stage": stage, "reply": _first(reply)}),
                data=data,
                problems=(self.problem("reply", reply.text, refused_at=stage),),
            )
        self.emit(
            "sender",
            Status.SKIP,
            Summary("auth.needs_password"),
        )

    def smtp_login_and_sender(self) -> None:
        if not self.may_send_password():
            return
        if not self.smtp_authenticate():
            self.goodbye()
            self.emit(
                "sender",
                Status.SKIP,
                Summary("sender.login_failed"),
            )
            return
        self.session.step("sender")
        stage, reply = self.envelope(self.plan.sender)
        self.goodbye()
        data = {
            "login": self.login,
            "sender": self.plan.sender,
            "recipient": self.plan.address.original,
        }
        if reply.ok:
            self.emit(
                "sender",
                Status.OK,
                Summary(
                    "sender.ok",
                    {
                        "sender": self.plan.sender,
                        "recipient": self.plan.address.original,
                        "login": self.login,
                    },
                ),
                data=data,
                facts=LoginFacts(self.login, True),
            )
        else:
            self.emit(
                "sender",
                Status.FAIL,
                Summary("envelope.refused", {"stage": stage, "reply": _first(reply)}),
                data={**data, "reply": reply.text},
                facts=LoginFacts(self.login, False, stage),
                problems=(
                    self.problem(
                        "reply",
                        reply.text,
                        refused_at=stage,
                        sender=self.plan.sender,
                        login=self.login,
                    ),
                ),
            )

    def smtp_authenticate(self) -> bool:
        """One AUTH exchange; emits ``smtp.auth``; True when the server accepted it."""
        if self.plan.oauth2_token is not None:
            return self.oauth2_login()
        offered = self.state.caps.auth_mechanisms()
        order = _OVER_TLS if self.state.tls else _IN_CLEAR
        mech = next((m for m in order if m in offered), None)
        extra = self.clear_text_problems()
        if mech is None:
            ehlo = self.state.caps.reply.text if self.state.caps.reply else ""
            # AUTH that was not offered is never sent (RFC 4954 4: the server answers 503, and
            # its words then say nothing about why). A plaintext connection that lists
            # STARTTLS but no AUTH keeps the login for inside TLS, as Exim and Postfix do.
            if self.auth_only_after_starttls():
                self.offered_after_tls(ehlo)
            else:
                self.no_mechanism(offered, ehlo)
            return False
        if mech == "PLAIN":
            secret = plain_response(self.login, self.password)
            reply = smtp.command(self.conn, f"AUTH PLAIN {secret}", shown=f"AUTH PLAIN {MASK}")
            if reply.code == 334:  # a server that wants the response on its own line
                reply = self.smtp_send_secret(plain_response(self.login, self.password))
        elif mech == "LOGIN":
            reply = smtp.command(self.conn, "AUTH LOGIN")
            if reply.code == 334:
                reply = self.smtp_send_secret(_b64(self.login))
            if reply.code == 334:
                reply = self.smtp_send_secret(_b64(self.password))
        else:  # CRAM-MD5
            reply = smtp.command(self.conn, "AUTH CRAM-MD5")
            if reply.code == 334:
                response = cram_md5_response(self.login, self.password, reply.text[4:])
                self.redact.add(response)
                reply = self.smtp_send_secret(response)
        if reply.code == 334:  # still asking: cancel (RFC 4954 4), never guess further
            reply = smtp.command(self.conn, "*")
        data = self.base_data(mechanism=mech)
        if reply.code is not None and 200 <= reply.code < 300:
            self.emit(
                "auth",
                Status.WARN if extra else Status.OK,
                Summary("auth.ok", {"login": self.login, "mechanism": f"AUTH {mech}"}),
                data=data,
                facts=LoginFacts(self.login, True),
                problems=extra,
            )
            return True
        self.emit(
            "auth",
            Status.FAIL,
            Summary("auth.refused", {"mechanism": f"AUTH {mech}", "reply": _first(reply)}),
            data={**data, "reply": reply.text},
            facts=LoginFacts(self.login, False, "credentials"),
            problems=[*self.refusal_problems(reply.text, mechanism=mech), *extra],
        )
        return False

    def offered_after_tls(self, ehlo: str) -> None:
        self.emit(
            "auth",
            Status.FAIL,
            Summary("auth.offered_after_tls"),
            data=self.base_data(),
            facts=LoginFacts(self.login, None),
            problems=(self.problem("auth.plaintext_refused", ehlo),),
        )

    def auth_only_after_starttls(self) -> bool:
        """A plaintext connection whose EHLO lists STARTTLS but no AUTH: the login is kept for
        inside TLS (RFC 3207 lets a server offer extensions only after STARTTLS)."""
        caps = self.state.caps
        return not self.state.tls and not caps.auth_mechanisms() and caps.has("STARTTLS")

    def smtp_send_secret(self, line: str) -> Reply:
        return smtp.command(self.conn, line, shown=MASK)

    def no_mechanism(self, offered: Sequence[str], text: str) -> None:
        listed = " ".join(offered) or "none"
        self.emit(
            "auth",
            Status.FAIL,
            Summary(
                "auth.no_mechanism" if offered else "auth.no_mechanism_offered",
                {"offered": " ".join(offered)},
            ),
            data=self.base_data(),
            facts=LoginFacts(self.login, None),
            problems=(self.problem("auth.no_mechanism", text, offered=listed),),
        )

    @property
    def password(self) -> str:
        assert self.plan.password is not None
        return self.plan.password

    # -- IMAP ------------------------------------------------------------------------------
    def imap_login(self) -> None:
        caps = self.state.caps
        if caps.has("LOGINDISABLED") and not self.state.tls:
            text = caps.reply.text if caps.reply else "LOGINDISABLED"
            self.emit_after_goodbye(
                "auth",
                Status.FAIL,
                Summary("auth.login_disabled"),
                data=self.base_data(),
                facts=LoginFacts(self.login, None),
                problems=(self.problem("auth.plaintext_refused", text),),
            )
            return
        if not self.may_send_password():
            return
        dialect = self.state.dialect
        assert isinstance(dialect, Imap)
        extra = self.clear_text_problems()
        quoted = _imap_quoted(self.login), _imap_quoted(self.password)
        use_login = not caps.has("LOGINDISABLED") and None not in quoted
        if use_login:
            mech = "LOGIN"
            self.redact.add(quoted[1] or "")
            reply = dialect.command(
                self.conn, f"LOGIN {quoted[0]} {quoted[1]}", shown=f"LOGIN {quoted[0]} {MASK}"
            )
        else:
            mech = "AUTHENTICATE PLAIN"
            reply = self.imap_authenticate_plain(dialect)
        text = _imap_text(reply)
        self.login_outcome(mech, reply.ok, text, _last_line(text), extra)

    def imap_authenticate_plain(self, dialect: Imap) -> Reply:
        secret = plain_response(self.login, self.password)
        tag = dialect.next_tag()
        if self.state.caps.has("SASL-IR"):
            self.conn.send_line(
                f"{tag} AUTHENTICATE PLAIN {secret}", shown=f"{tag} AUTHENTICATE PLAIN {MASK}"
            )
            return dialect.read_response(self.conn, tag)
        self.conn.send_line(f"{tag} AUTHENTICATE PLAIN")
        line = self.conn.read_line()
        if line.startswith("+"):
            self.conn.send_line(secret, shown=MASK)
            return dialect.read_response(self.conn, tag)
        if line.startswith(tag + " "):
            from maildiag.probes.imap import parse_tagged

            return parse_tagged(tag, [line])
        rest = dialect.read_response(self.conn, tag)
        return Reply(rest.ok, "\n".join([line, rest.text]), lines=(line, *rest.lines))

    def login_outcome(
        self, mech: str, ok: bool, text: str, shown: str, extra: Sequence[Problem]
    ) -> None:
        """The ``imap.auth`` / ``pop3.auth`` observation of one login (after LOGOUT/QUIT)."""
        data = self.base_data(mechanism=mech)
        if ok:
            self.emit_after_goodbye(
                "auth",
                Status.WARN if extra else Status.OK,
                Summary("auth.ok", {"login": self.login, "mechanism": mech}),
                data=data,
                facts=LoginFacts(self.login, True),
                problems=list(extra),
            )
        else:
            self.emit_after_goodbye(
                "auth",
                Status.FAIL,
                Summary("auth.refused", {"mechanism": mech, "reply": shown}),
                data={**data, "reply": text},
                facts=LoginFacts(self.login, False, "credentials"),
                problems=[*self.refusal_problems(text, mechanism=mech), *extra],
            )

    def emit_after_goodbye(self, name: str, status: Status, summary: Summary, **kw: Any) -> None:
        self.goodbye()
        self.emit(name, status, summary, **kw)

    # -- POP3 ------------------------------------------------------------------------------
    def pop3_login(self) -> None:
        if not self.may_send_password():
            return
        dialect = self.state.dialect
        assert isinstance(dialect, Pop3)
        caps = self.state.caps
        extra = self.clear_text_problems()
        sasl = self.state.caps.auth_mechanisms()
        if caps.has("USER") or not caps.items or "PLAIN" not in sasl:
            mech = "USER/PASS"
            reply = dialect.command(self.conn, f"USER {self.login}")
            if reply.ok:
                reply = dialect.command(self.conn, f"PASS {self.password}", shown=f"PASS {MASK}")
            else:
                extra = []  # refused at USER: the password never went out
        else:
            mech = "AUTH PLAIN"
            self.conn.send_line(
                f"AUTH PLAIN {plain_response(self.login, self.password)}",
                shown=f"AUTH PLAIN {MASK}",
            )
            line = self.conn.read_line()
            if line.startswith("+ ") or line == "+":  # wants the response on its own line
                self.conn.send_line("*")  # RFC 5034 4: cancel, never guess further
                line = self.conn.read_line()
            reply = parse_status(line)
        self.login_outcome(mech, reply.ok, reply.text, _first(reply), extra)

    # -- OAuth2 ----------------------------------------------------------------------------
    @property
    def token(self) -> str:
        assert self.plan.oauth2_token is not None
        return self.plan.oauth2_token

    def mailbox_oauth2_login(self) -> None:
        """``imap.auth`` / ``pop3.auth`` with the OAuth2 token."""
        if self.may_send_password():
            self.oauth2_login()

    def oauth2_login(self) -> bool:
        """One OAuth2 exchange; emits ``<svc>.auth``; True when the server accepted the token."""
        caps = self.state.caps
        offered = caps.auth_mechanisms()
        mech = next((m for m in oauth2.MECHANISMS if m in offered), None)
        smtp_service = self.service is Service.SMTP
        finish = self.emit if smtp_service else self.emit_after_goodbye
        if mech is None:
            text = caps.reply.text if caps.reply else ""
            if smtp_service and self.auth_only_after_starttls():
                self.offered_after_tls(text)
                return False
            listed = " ".join(offered)
            finish(
                "auth",
                Status.FAIL,
                Summary("auth.oauth_not_offered", {"offered": listed}),
                data=self.base_data(),
                facts=LoginFacts(self.login, None),
                problems=(self.problem("auth.oauth_not_offered", text, offered=listed or "none"),),
            )
            return False
        run = {
            Service.SMTP: self.smtp_oauth2,
            Service.IMAP: self.imap_oauth2,
            Service.POP3: self.pop3_oauth2,
        }[self.service]
        return self.oauth2_outcome(run(mech), finish)

    def oauth2_response(self, mech: str) -> str:
        t = self.state.target
        return oauth2.encode(oauth2.message(mech, self.login, self.token, t.host, t.port))

    def oauth2_outcome(self, ex: _Exchange, finish: Callable[..., None]) -> bool:
        extra = self.clear_text_problems()
        data = self.base_data(mechanism=ex.mechanism)
        if ex.error is not None:
            data["oauth2_error"] = ex.error
        final = ex.final
        assert final is not None
        if ex.ok and self.service is Service.IMAP:
            refusal = self.imap_mailbox_probe(ex)
            if refusal is not None:
                shown = _last_line(_imap_text(refusal))
                finish(
                    "auth",
                    Status.FAIL,
                    Summary(
                        "auth.mailbox_refused",
                        {"login": self.login, "mechanism": ex.command, "reply": shown},
                    ),
                    data={**data, "reply": _imap_text(refusal)},
                    facts=LoginFacts(self.login, False, "mailbox"),
                    problems=[
                        self.problem(
                            "reply", "\n".join(ex.lines), login=self.login, mechanism=ex.mechanism
                        ),
                        *extra,
                    ],
                )
                return False
        if ex.ok:
            finish(
                "auth",
                Status.WARN if extra else Status.OK,
                Summary("auth.ok", {"login": self.login, "mechanism": ex.command}),
                data=data,
                facts=LoginFacts(self.login, True),
                problems=extra,
            )
            return True
        facts = oauth2.error_facts(ex.error) if ex.error is not None else {}
        text = _imap_text(final) if self.service is Service.IMAP else final.text
        shown = _last_line(text) if self.service is Service.IMAP else _first(final)
        finish(
            "auth",
            Status.FAIL,
            Summary(
                "auth.oauth_refused",
                {"mechanism": ex.command, "reply": shown, "status": facts.get("status", "")},
            ),
            data={**data, "reply": text},
            facts=LoginFacts(self.login, False, "credentials"),
            problems=[
                *self.refusal_problems("\n".join(ex.lines), mechanism=ex.mechanism, **facts),
                *extra,
            ],
        )
        return False

    def challenge(self, ex: _Exchange, prefix: str, payload: str) -> None:
        """A server's challenge after our response: an error, decoded into ``ex``."""
        obj = oauth2.decode_error(payload)
        if obj is None:
            ex.lines.append(f"{prefix} {payload}".rstrip())
            return
        text = oauth2.compact(obj)
        if self.redact(text) != text:  # the server wrapped the token into its challenge
            t = self.session.transcript
            for i in range(len(t) - 1, -1, -1):
                if payload in t[i]:
                    t[i] = t[i].replace(payload, MASK)
                    break
        ex.error = obj
        ex.lines.append(f"{prefix} {text}")

    def smtp_oauth2(self, mech: str) -> _Exchange:
        ex = _Exchange(mech, f"AUTH {mech}", [f"AUTH {mech} {MASK}"])
        response = self.oauth2_response(mech)
        line = f"AUTH {mech} {response}"
        if len(line) + 2 <= _SMTP_LINE:
            reply = smtp.command(self.conn, line, shown=f"AUTH {mech} {MASK}")
        else:
            reply = smtp.command(self.conn, f"AUTH {mech}")
            if reply.code == 334:
                reply = self.smtp_send_secret(response)
        if reply.code == 334:  # an error challenge: answer it to hear the refusal
            self.challenge(ex, "334", reply.text[4:].strip())
            reply = smtp.command(self.conn, oauth2.DUMMY_RESPONSE[mech])
            if reply.code == 334:  # still asking: cancel (RFC 4954 4), never guess further
                reply = smtp.command(self.conn, "*")
        ex.final = reply
        ex.ok = reply.code is not None and 200 <= reply.code < 300
        ex.lines.extend(reply.lines or reply.text.splitlines())
        return ex

    def imap_oauth2(self, mech: str) -> _Exchange:
        dialect = self.state.dialect
        assert isinstance(dialect, Imap)
        ex = _Exchange(mech, f"AUTHENTICATE {mech}", [f"AUTHENTICATE {mech} {MASK}"])
        response = self.oauth2_response(mech)
        tag = dialect.next_tag()
        if self.state.caps.has("SASL-IR"):
            self.conn.send_line(
                f"{tag} AUTHENTICATE {mech} {response}", shown=f"{tag} AUTHENTICATE {mech} {MASK}"
            )
        else:
            self.conn.send_line(f"{tag} AUTHENTICATE {mech}")
            step = self.imap_step(tag)
            if isinstance(step, Reply):
                return ex.done(step, step.ok, _imap_text(step))
            self.conn.send_line(response, shown=MASK)
        step = self.imap_step(tag)
        if isinstance(step, str):  # an error challenge
            self.challenge(ex, "+", step)
            self.conn.send_line(oauth2.DUMMY_RESPONSE[mech])
            step = self.imap_step(tag)
            if isinstance(step, str):  # still asking: cancel (RFC 3501 6.2.2)
                self.conn.send_line("*")
                step = self.imap_step(tag)
            if isinstance(step, str):
                raise ProtocolViolation("the server kept asking after AUTHENTICATE was cancelled")
        return ex.done(step, step.ok, _imap_text(step))

    def imap_step(self, tag: str) -> Reply | str:
        """The next continuation request's text, or the tagged completion of ``tag``."""
        deadline = time.monotonic() + self.conn.timeout
        lines: list[str] = []
        while True:
            line = self.conn.read_line(deadline=deadline)
            if line == "+" or line.startswith("+ "):
                return line[1:].strip()
            lines.append(line)
            if line.startswith(tag + " "):
                return parse_tagged(tag, self.conn.masked_reply(lines))
            if not line.startswith("*"):
                raise ProtocolViolation(f"not an IMAP response line: {line[:80]!r}")
            if len(lines) >= MAX_REPLY_LINES:
                raise TooLong(f"a response of more than {MAX_REPLY_LINES} lines")

    def imap_mailbox_probe(self, ex: _Exchange) -> Reply | None:
        """After the login: the refusal of a read-only STATUS, or None when it was answered."""
        dialect = self.state.dialect
        assert isinstance(dialect, Imap)
        reply = dialect.command(self.conn, _MAILBOX_PROBE)
        if reply.ok:
            return None
        ex.lines += [_MAILBOX_PROBE, *_imap_text(reply).splitlines()]
        return reply

    def pop3_oauth2(self, mech: str) -> _Exchange:
        ex = _Exchange(mech, f"AUTH {mech}", [f"AUTH {mech} {MASK}"])
        response = self.oauth2_response(mech)
        line = f"AUTH {mech} {response}"
        if len(line) + 2 <= _POP3_LINE:
            self.conn.send_line(line, shown=f"AUTH {mech} {MASK}")
        else:
            self.conn.send_line(f"AUTH {mech}")
            first = self.conn.read_line()
            if not _continuation(first):
                reply = parse_status(first)
                return ex.done(reply, reply.ok, reply.text)
            self.conn.send_line(response, shown=MASK)
        answer = self.conn.read_line()
        if _continuation(answer):  # an error challenge
            self.challenge(ex, "+", answer[1:].strip())
            self.conn.send_line(oauth2.DUMMY_RESPONSE[mech])
            answer = self.conn.read_line()
            if _continuation(answer):  # still asking: cancel (RFC 5034 4)
                self.conn.send_line("*")
                answer = self.conn.read_line()
        reply = parse_status(answer)
        return ex.done(reply, reply.ok, reply.text)


@dataclass
class _Exchange:
    """One OAuth2 exchange as it went: the dialogue the rules read (our secret masked, an error
    challenge as its JSON), the decoded challenge, the final reply."""

    mechanism: str  # XOAUTH2 | OAUTHBEARER
    command: str  # "AUTH XOAUTH2", "AUTHENTICATE OAUTHBEARER"
    lines: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    final: Reply | None = None
    ok: bool = False

    def done(self, reply: Reply, ok: bool, text: str) -> _Exchange:
        self.final, self.ok = reply, ok
        self.lines.extend(text.splitlines())
        return self


def _continuation(line: str) -> bool:
    """A POP3 or IMAP continuation request (``+`` or ``+ text``), not ``+OK``."""
    return line == "+" or line.startswith("+ ")


def _imap_quoted(text: str) -> str | None:
    """An IMAP quoted string, or None when it needs a literal (non-ASCII, CR, LF, NUL)."""
    if not text.isascii() or any(c in text for c in "\r\n\0"):
        return None
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_text(reply: Reply) -> str:
    """The server's words: untagged lines as sent, the tagged completion without our tag."""
    lines = list(reply.lines) or reply.text.splitlines()
    if lines:
        head, _, rest = lines[-1].partition(" ")
        if head and not head.startswith(("*", "+")):
            lines[-1] = rest
    return "\n".join(line for line in lines if not line.startswith("+"))


def _first(reply: Reply) -> str:
    return reply.text.splitlines()[0][:200] if reply.text else ""


def _last_line(text: str) -> str:
    """IMAP: the tagged completion is the line that says what happened."""
    return text.splitlines()[-1][:200] if text else ""


# -- across protocols ----------------------------------------------------------------------


def cross_check(observations: Sequence[Observation]) -> list[Observation]:
    """A login refused by one protocol but accepted by another is ``protocol_disabled``.

    Dovecot answers a POP3 login of a user whose POP3 is switched off exactly as it answers a
    wrong password ("-ERR [AUTH] Authentication failed."); only the same login and password
    working over IMAP or SMTP tells the two apart. The same OAuth2 token accepted by one protocol
    and refused by another is ``auth.oauth_protocol_disabled``: the protocol is off for the
    mailbox, or (Microsoft: one scope per protocol) the token lacks its scope; unless the server's
    error challenge names the missing scope (403, ``insufficient_scope``), which stands.
    """
    accepted: dict[str, set[str]] = {}
    for obs in observations:
        if isinstance(obs.facts, LoginFacts) and obs.facts.accepted is True:
            accepted.setdefault(obs.facts.login, set()).add(obs.check.split(".")[0])
    if not accepted:
        return list(observations)
    out: list[Observation] = []
    for obs in observations:
        facts = obs.facts
        if (
            isinstance(facts, LoginFacts)
            and facts.accepted is False
            and facts.refused_at == "credentials"
        ):
            others = sorted(accepted.get(facts.login, set()) - {obs.check.split(".")[0]})
            if others:
                obs = _protocol_disabled(obs, others)
        out.append(obs)
    return out


def _protocol_disabled(obs: Observation, others: list[str]) -> Observation:
    problems: list[Problem] = []
    for p in obs.problems:
        if p.signal == "reply" and _oauth2_refusal(p):
            if str(p.params.get("status", "")) in _TOKEN_VERDICTS:
                problems.append(p)  # the server named the reason: its word stands
            else:
                params = {**p.params, "accepted_by": ", ".join(others)}
                problems.append(Problem("auth.oauth_protocol_disabled", p.text, params))
        elif p.signal == "reply":
            problems.append(
                Problem(
                    "auth.protocol_disabled",
                    p.text,
                    # protocol names as a person writes them: "IMAP, SMTP"
                    {**p.params, "accepted_by": ", ".join(o.upper() for o in others)},
                )
            )
        elif p.signal != "auth.login_form":  # the same login works elsewhere
            problems.append(p)
    return replace(obs, problems=tuple(problems), data={**obs.data, "accepted_by": others})


# The error challenge status a cross-check does not overrule: a token can lack the scope of one
# protocol only (Microsoft issues one scope per protocol). "Invalid token" it cannot be when another
# protocol took the same token a moment ago: servers send it for any refusal (Dovecot 2.3 answers a
# user its deny list blocks for POP3 with {"status":"401"}), so there the protocol is off.
_TOKEN_VERDICTS = frozenset({"403", "insufficient_scope"})


def _oauth2_refusal(problem: Problem) -> bool:
    return problem.params.get("mechanism") in oauth2.MECHANISMS


def _login_data(facts: LoginFacts) -> dict[str, Any]:
    """The JSON ``data`` of a login's facts."""
    data: dict[str, Any] = {"login": facts.login, "accepted": facts.accepted}
    if facts.refused_at is not None:
        data["refused_at"] = facts.refused_at
    return data
