"""One target, one session: connect → greeting → TLS → capabilities → (login stage).

The session drives a dialect (``Smtp``, ``Imap``, ``Pop3``) through the checks in order and emits
one ``Observation`` per check id as soon as it is known. It works out the mode a port really
speaks — implicit TLS, STARTTLS or plain — and when that differs from what was expected it says
so (``mode.*`` problems) and carries on in the real mode, so the user still learns about the
certificate and the capabilities. A check that cannot run because an earlier one failed is
``skip`` with the reason; every check id of the target is emitted exactly once.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maildiag.config import DEFAULT_PORTS, RunConfig
from maildiag.errors import (
    Closed,
    NetError,
    ProtocolViolation,
    StepTimeout,
    TlsFailed,
    TooLong,
)
from maildiag.models import (
    CheckFacts,
    Observation,
    Problem,
    Security,
    Status,
    StepStart,
    Summary,
    Target,
)
from maildiag.net import Conn, ConnectRecord, TlsContexts, TlsSession, connect, sockaddr_text
from maildiag.probes import check_ids
from maildiag.probes.base import Capabilities, Dialect, Reply, identify
from maildiag.probes.dialects import make_dialect
from maildiag.probes.tls import assess, judge
from maildiag.redact import Redactor

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns

_FAMILY_LABEL = {"ipv6": "IPv6", "ipv4": "IPv4"}

# How long a plaintext greeting may keep us waiting before we also try implicit TLS. A silent
# port is often an implicit-TLS port waiting for our ClientHello (SPEC: try the other mode first).
SILENCE_WAIT = 3.0


@dataclass
class Env:
    """What a session needs from the run; passed in, never global (STYLE.md 7)."""

    config: RunConfig
    emit: Callable[[Observation], None]
    dns: Dns | None = None
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    login_stage: Callable[[LoginState], None] | None = None
    # (issuer substring, product) pairs of TLS-inspection products, from the rule base
    interception: tuple[tuple[str, str], ...] = ()
    # the run's TLS contexts, built on first use and shared by every session
    tls: TlsContexts | None = None
    # the run's redactor, shared with the login stage: masks what a server echoes of the secret
    redact: Redactor | None = None
    # told as each network step begins (what the run waits for now: a progress display)
    on_step: Callable[[StepStart], None] | None = None

    def __post_init__(self) -> None:
        if self.redact is None:
            self.redact = Redactor(self.config.password, self.config.oauth2_token)
        if self.tls is None:
            self.tls = TlsContexts()

    @property
    def verify_ctx(self) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls.verify(self.config.ca_file)

    @property
    def noverify_ctx(self) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls.noverify()


@dataclass
class LoginState:
    """Handed to the login stage (``smtp.auth``, ``smtp.sender``, ``imap.auth``, ``pop3.auth``)."""

    target: Target
    conn: Conn
    dialect: Dialect
    caps: Capabilities
    mode: Security  # what the port really speaks
    tls: bool  # the connection is encrypted now
    trusted: bool  # ... and its certificate verified: only then may a password go out
    session: Session


@dataclass
class Session:
    target: Target
    env: Env
    emitted: set[str] = field(default_factory=set)
    transcript: list[str] = field(default_factory=list)
    skip_reason: Summary | None = None  # why the checks not run yet will be ``skip``
    # the connect check when an address of the other family has not answered yet: emitted at
    # the end, once it has (the session carries on over the address that connected)
    _late_connect: tuple[Conn, ConnectRecord, int] | None = None
    _good_ip: str | None = None  # the address that connected: reconnects try it first
    _mark: int = 0
    _t0: float = 0.0
    _step: str = ""  # the step announced last

    # -- emitting ----------------------------------------------------------------------
    def _slice(self) -> tuple[str, ...]:
        lines = tuple(self.transcript[self._mark :])
        self._mark = len(self.transcript)
        return lines

    def start(self) -> None:
        self._t0 = time.monotonic()

    def step(self, name: str, timeout: float | None = None) -> None:
        """Say that the network step of check ``name`` begins (``Env.on_step``); a step that
        goes on (the greeting read after its first byte was peeked) is said once."""
        on_step = self.env.on_step
        if on_step is not None and name != self._step:
            self._step = name
            t = self.target
            on_step(
                StepStart(
                    f"{t.service}.{name}",
                    t.hostport,
                    self.env.config.timeout if timeout is None else timeout,
                    time.monotonic(),
                    t.label,
                )
            )

    def skip(self, reason: Summary) -> None:
        """Why every check not run yet will be ``skip``."""
        self.skip_reason = reason

    def skip_once(self, reason: Summary) -> None:
        """``skip()`` unless an earlier step already gave the reason."""
        if self.skip_reason is None:
            self.skip(reason)

    def emit(
        self,
        name: str,
        status: Status,
        summary: Summary,
        *,
        data: Mapping[str, Any] | None = None,
        problems: Sequence[Problem] = (),
        facts: CheckFacts | None = None,
    ) -> None:
        check = f"{self.target.service}.{name}"
        elapsed = int((time.monotonic() - self._t0) * 1000) if self._t0 else 0
        self.emitted.add(check)
        self.env.emit(
            Observation(
                check,
                status,
                summary,
                self.target,
                data or {},
                tuple(problems),
                self._slice(),
                elapsed,
                facts,
            )
        )
        self._t0 = time.monotonic()

    def emit_error(
        self,
        name: str,
        exc: NetError | ProtocolViolation,
        *,
        data: dict[str, Any] | None = None,
        problems: tuple[Problem, ...] = (),
    ) -> None:
        """A check that failed with a network or protocol error: its words are the summary."""
        self.emit(name, Status.FAIL, self.net(exc), data=data, problems=problems)

    def net(self, exc: NetError | ProtocolViolation) -> Summary:
        """A network error as a summary (its own, or nested in another)."""
        return net_summary(exc, self.env.config.timeout, self.target)

    def emit_observation(self, obs: Observation) -> None:
        self.emitted.add(obs.check)
        self.env.emit(obs)
        self._t0 = time.monotonic()

    def params(self, **extra: Any) -> dict[str, Any]:
        t = self.target
        return {
            "service": str(t.service),
            "host": t.host,
            "port": t.port,
            "security": str(t.security),
            **extra,
        }

    def problem(self, signal: str, text: str = "", **extra: Any) -> Problem:
        return Problem(signal, text, self.params(**extra))

    # -- the sequence --------------------------------------------------------------------
    def probe(self) -> None:
        """Every check of the target, each emitted once, whatever the server does."""
        conn: Conn | None = None
        try:
            conn = self._run()
        except NetError as exc:  # the network failed where no step expected it: still a fact
            pending = [c for c in check_ids(self.target.service) if c not in self.emitted]
            if pending:
                self.emit_error(
                    pending[0].split(".", 1)[1], exc, problems=(self.problem(exc.signal, str(exc)),)
                )
            self.skip_once(Summary("skip.connection_failed", {"error": self.net(exc)}))
        except Exception as exc:  # a bug in us: visible, not a crash (STYLE.md 3)
            import traceback

            pending = [c for c in check_ids(self.target.service) if c not in self.emitted]
            check = pending[0] if pending else f"{self.target.service}.connect"
            redact = self.env.redact or str
            self.transcript.append(redact(traceback.format_exc(limit=8).rstrip()))
            error = redact(f"{type(exc).__name__}: {exc}")
            self.emit_observation(
                Observation(
                    check,
                    Status.FAIL,
                    Summary("internal_error", {"error": error}),
                    self.target,
                    {"internal_error": error},
                    (self.problem("check.internal_error", error, error=error),),
                    self._slice(),
                )
            )
            self.skip_once(Summary("skip.internal_error"))
        finally:
            if conn is not None:
                conn.close()
            if self._late_connect is not None:
                first, record, duration_ms = self._late_connect
                record.settle()
                self.env.emit(self._connect_observation(first, record, duration_ms))
            for check in check_ids(self.target.service):
                if check not in self.emitted:
                    self.emitted.add(check)
                    self.env.emit(
                        Observation(
                            check,
                            Status.SKIP,
                            self.skip_reason or Summary("skip.not_run"),
                            self.target,
                        )
                    )

    def _connect(self) -> Conn | None:
        t = self.target
        record = ConnectRecord()
        try:
            conn = connect(
                t.host,
                t.port,
                timeout=self.env.config.timeout,
                dns=self.env.dns,
                transcript=self.transcript,
                redact=self.env.redact,
                record=record,
            )
        except NetError as exc:
            self.emit_error(
                "connect",
                exc,
                data={"addresses": record.to_json()} if record.attempts else None,
                problems=(
                    self.problem(
                        exc.signal,
                        str(exc),
                        address=f"{t.host}:{t.port}",
                        timeout=f"{self.env.config.timeout:g}",
                    ),
                ),
            )
            self.skip(Summary("skip.unreachable", {"address": f"{t.host}:{t.port}"}))
            return None
        self._good_ip = next((a.ip for a in record.attempts if a.result == "connected"), None)
        duration_ms = int((time.monotonic() - self._t0) * 1000) if self._t0 else 0
        if record.settled():
            self.emit_observation(self._connect_observation(conn, record, duration_ms))
        else:
            self._late_connect = (conn, record, duration_ms)
            self.emitted.add(f"{t.service}.connect")
            self._t0 = time.monotonic()
        return conn

    def _connect_observation(self, conn: Conn, record: ConnectRecord, ms: int) -> Observation:
        """``<svc>.connect``: connected; ``warn`` when an address of the other family did not
        answer or refused while this one connected (RFC 8305: a program that tries the broken
        family first hangs or fails now and then)."""
        data: dict[str, Any] = {"address": conn.peer, "addresses": record.to_json()}
        working = {a.family for a in record.attempts if a.result == "connected"}
        broken = [
            a
            for a in record.attempts
            if a.result in ("timeout", "refused") and a.family not in working
        ]
        if not broken:
            summary = Summary("connect.ok", {"address": conn.peer})
            check = f"{self.target.service}.connect"
            return Observation(check, Status.OK, summary, self.target, data, duration_ms=ms)
        problems = []
        for family in dict.fromkeys(a.family for a in broken):
            a = next(x for x in broken if x.family == family)
            problems.append(
                self.problem(
                    f"connect.family_{a.result}",
                    str(a.error or ""),
                    family=_FAMILY_LABEL[a.family_name],
                    failed_address=sockaddr_text(a.ip, self.target.port),
                    working_family=_FAMILY_LABEL[
                        next(x.family_name for x in record.attempts if x.result == "connected")
                    ],
                    address=conn.peer,
                    timeout=f"{self.env.config.timeout:g}",
                )
            )
        first = broken[0]
        summary = Summary(
            f"connect.family_{first.result}",
            {
                "address": conn.peer,
                "family": _FAMILY_LABEL[first.family_name],
                "failed": sockaddr_text(first.ip, self.target.port),
                "timeout": f"{self.env.config.timeout:g}",
            },
        )
        return Observation(
            f"{self.target.service}.connect",
            Status.WARN,
            summary,
            self.target,
            data,
            tuple(problems),
            duration_ms=ms,
        )

    def _run(self) -> Conn | None:
        self.start()
        self.step("connect")
        conn = self._connect()
        if conn is None:
            return None
        if self.target.security is Security.SSL:
            return self._implicit(conn)
        return self._plaintext_first(conn)

    def _reconnect(self) -> Conn | None:
        t = self.target
        try:
            return connect(
                t.host,
                t.port,
                timeout=self.env.config.timeout,
                dns=self.env.dns,
                transcript=self.transcript,
                redact=self.env.redact,
                prefer=self._good_ip,
            )
        except NetError as exc:
            self.skip(
                Summary(
                    "skip.reconnect_failed",
                    {"address": f"{t.host}:{t.port}", "error": self.net(exc)},
                )
            )
            return None

    # -- implicit TLS ------------------------------------------------------------------------
    def _handshake(self, conn: Conn) -> tuple[Conn | None, TlsSession | None, TlsFailed | None]:
        """Verify; on a certificate failure fetch the chain again unverified to judge it."""
        env = self.env
        try:
            return conn, conn.start_tls(env.verify_ctx, self.target.host), None
        except TlsFailed as exc:
            if exc.verify_code is None:
                raise
            conn.close()
            again = self._reconnect()
            if again is None:
                return None, None, exc
            return again, again.start_tls(env.noverify_ctx, self.target.host), exc

    def _implicit(self, conn: Conn) -> Conn | None:
        started = time.monotonic()
        self.step("tls")
        try:
            conn2, session, failure = self._handshake(conn)
        except TlsFailed as exc:
            conn.close()
            if exc.signal == "connect.timeout":
                self.emit(
                    "greeting",
                    Status.FAIL,
                    Summary("greeting.silent_tls"),
                    problems=(
                        self.problem(
                            "greeting.silent", str(exc), timeout=f"{self.env.config.timeout:g}"
                        ),
                    ),
                )
                self.skip(Summary("skip.silent"))
                return None
            # Not TLS at all? A plaintext greeting on the same port means a mode mismatch.
            plain = self._reconnect()
            if plain is not None and _peek_quietly(plain, self.env.config.timeout) is not None:
                return self._after_connect_plain(plain, mismatch_from=Security.SSL)
            if plain is not None:
                plain.close()
            self.emit_error("tls", exc, problems=(self.problem("tls.handshake_failed", str(exc)),))
            self.skip(Summary("skip.no_tls"))
            return None
        if conn2 is None or session is None:
            return None
        self._emit_tls(session, failure, started, conn2)
        dialect = make_dialect(self.target.service)
        greeting = self._greeting(conn2, dialect)
        if greeting is None:
            return conn2
        return self._finish(conn2, dialect, greeting, Security.SSL, trusted=failure is None)

    def _emit_tls(
        self,
        session: TlsSession,
        failure: TlsFailed | None,
        started: float,
        conn: Conn | None = None,
        mode: Security = Security.SSL,
    ) -> None:
        cfg = self.env.config
        # the chain; for an untrusted one, the interception evidence
        facts = assess(
            self.target,
            conn,
            session,
            failure,
            mode,
            timeout=cfg.timeout,
            dns=self.env.dns,
            transcript=self.transcript,
            products=self.env.interception,
        )
        obs = judge(
            self.target,
            session,
            failure,
            now=self.env.now(),
            warn_days=cfg.warn_days,
            crit_days=cfg.crit_days,
            duration_ms=int((time.monotonic() - started) * 1000),
            transcript=self._slice(),
            facts=facts,
        )
        self.emit_observation(obs)

    def _hung_up(self, conn: Conn, exc: NetError) -> Conn:
        """The server closed (or reset) the connection before its first byte."""
        self.emit(
            "greeting",
            Status.FAIL,
            Summary("greeting.none", {"error": self.net(exc)}),
            problems=(self.problem("greeting.closed", str(exc)),),
        )
        self.skip(Summary("skip.closed"))
        return conn

    # -- plaintext first (STARTTLS, plain, or unknown) -----------------------------------------
    def _plaintext_first(self, conn: Conn) -> Conn | None:
        cfg = self.env.config
        wait = min(cfg.timeout, SILENCE_WAIT)
        self.step("greeting", wait)
        try:
            first = conn.peek_first_byte(wait)
        except NetError as exc:
            return self._hung_up(conn, exc)
        if first is not None:
            return self._after_connect_plain(conn, mismatch_from=None)
        # Silent: maybe an implicit-TLS port waiting for our ClientHello.
        conn.close()
        self.step("tls")
        tls_conn = self._reconnect()
        if tls_conn is None:
            return None
        try:
            started = time.monotonic()
            conn2, session, failure = self._handshake(tls_conn)
        except TlsFailed:
            tls_conn.close()
            self.step("greeting")
            plain = self._reconnect()  # not TLS either: give the greeting the full timeout
            if plain is None:
                return None
            try:
                first = plain.peek_first_byte(cfg.timeout)
            except NetError as exc:
                return self._hung_up(plain, exc)
            if first is None:
                self.emit(
                    "greeting",
                    Status.FAIL,
                    Summary("greeting.silent", {"timeout": f"{cfg.timeout:g}"}),
                    problems=(self.problem("greeting.silent", "", timeout=f"{cfg.timeout:g}"),),
                )
                self.skip(Summary("skip.silent"))
                return plain
            return self._after_connect_plain(plain, mismatch_from=None)
        if conn2 is None or session is None:
            return None
        dialect = make_dialect(self.target.service)
        greeting = self._greeting(conn2, dialect, announce=False)
        if greeting is None:
            return conn2
        if self.target.security is Security.AUTO:
            self.emit(
                "greeting",
                Status.OK,
                Summary("greeting.detected_ssl", {"reply": _first(greeting)}),
                data={"mode": "ssl", "greeting": greeting.text},
            )
        else:
            self._emit_mismatch(greeting, actual=Security.SSL)
        self._emit_tls(session, failure, started, conn2)
        return self._finish(conn2, dialect, greeting, Security.SSL, trusted=failure is None)

    def _after_connect_plain(self, conn: Conn, *, mismatch_from: Security | None) -> Conn | None:
        """A plaintext greeting is (about to be) on the wire."""
        dialect = make_dialect(self.target.service)
        greeting = self._greeting(conn, dialect, announce=False)
        if greeting is None:
            return conn
        caps_before = self._read_caps(conn, dialect, greeting)
        if caps_before is None:
            return conn
        offers_tls = caps_before.has(dialect.starttls_keyword)
        actual = Security.STARTTLS if offers_tls else Security.PLAIN
        expected = self.target.security
        if mismatch_from is Security.SSL:
            self._emit_mismatch(greeting, actual=actual)
        elif expected is Security.AUTO:
            self.emit(
                "greeting",
                Status.OK,
                Summary(
                    "greeting.detected_plain", {"mode": str(actual), "reply": _first(greeting)}
                ),
                data={"mode": str(actual), "greeting": greeting.text},
            )
        else:
            self.emit(
                "greeting",
                Status.OK,
                Summary("greeting.ok", {"reply": _first(greeting)}),
                data={"mode": str(actual), "greeting": greeting.text},
            )
        want_tls = expected in (Security.STARTTLS, Security.AUTO) or mismatch_from is Security.SSL
        if expected is Security.PLAIN:
            self.emit(
                "tls",
                Status.SKIP,
                Summary("tls.plain_requested"),
            )
            return self._finish(conn, dialect, greeting, Security.PLAIN, caps=caps_before)
        if not offers_tls:
            if want_tls and expected is Security.STARTTLS:
                self.emit(
                    "tls",
                    Status.FAIL,
                    Summary("tls.starttls_not_offered", {"keyword": dialect.starttls_keyword}),
                    problems=(
                        self.problem(
                            "starttls.not_offered",
                            _caps_text(caps_before),
                            expected=str(expected),
                            actual="plain",
                        ),
                    ),
                )
            else:
                self.emit(
                    "tls",
                    Status.WARN,
                    Summary("tls.none"),
                    problems=(
                        self.problem(
                            "starttls.not_offered",
                            _caps_text(caps_before),
                            expected=str(expected),
                            actual="plain",
                        ),
                    ),
                )
            return self._finish(conn, dialect, greeting, Security.PLAIN, caps=caps_before)
        return self._starttls(conn, dialect, greeting, caps_before)

    def _starttls(
        self, conn: Conn, dialect: Dialect, greeting: Reply, caps_before: Capabilities
    ) -> Conn | None:
        env = self.env
        started = time.monotonic()
        self.step("tls")
        reply = self._command(conn, lambda: dialect.starttls(conn), "tls")
        if reply is None:
            return conn
        if not reply.ok:
            self.emit(
                "tls",
                Status.FAIL,
                Summary(
                    "tls.starttls_refused",
                    {"keyword": dialect.starttls_keyword, "reply": _first(reply)},
                ),
                problems=(self.problem("starttls.refused", reply.text),),
            )
            self._emit_caps(caps_before, None)
            self.skip(Summary("skip.starttls_refused"))
            return conn
        failure: TlsFailed | None = None
        try:
            session = conn.start_tls(env.verify_ctx, self.target.host)
        except TlsFailed as exc:
            if exc.verify_code is None:
                self.emit_error(
                    "tls", exc, problems=(self.problem("tls.handshake_failed", str(exc)),)
                )
                self._emit_caps(caps_before, None)
                self.skip(Summary("skip.starttls_handshake"))
                return conn
            # Fetch the bad chain over a fresh connection to judge it, and carry on there.
            failure = exc
            conn.close()
            again = self._reconnect()
            if again is None:
                return None
            conn = again
            try:
                g2 = dialect.greeting(conn)
                dialect.capabilities(conn, g2)
                if not dialect.starttls(conn).ok:
                    raise ProtocolViolation("STARTTLS refused on the second connection")
                session = conn.start_tls(env.noverify_ctx, self.target.host)
            except (NetError, ProtocolViolation) as exc2:
                self.emit_error(
                    "tls",
                    failure,
                    data={"refetch_error": str(exc2)},
                    problems=(
                        self.problem(
                            failure.signal,
                            str(failure),
                            verify_message=failure.verify_message or "",
                        ),
                    ),
                )
                self.skip(Summary("skip.refetch_failed"))
                return conn
        self._emit_tls(session, failure, started, conn, Security.STARTTLS)
        return self._finish(
            conn, dialect, greeting, Security.STARTTLS, trusted=failure is None, before=caps_before
        )

    # -- pieces ----------------------------------------------------------------------------
    def _command(self, conn: Conn, fn: Callable[[], Reply], check: str) -> Reply | None:
        """Run one exchange; a network or protocol failure fails ``check`` and returns None."""
        try:
            return fn()
        except (NetError, ProtocolViolation) as exc:
            signal = exc.signal if isinstance(exc, NetError) else "greeting.wrong_protocol"
            if isinstance(exc, StepTimeout):
                signal = "connect.timeout"
            self.emit_error(
                check,
                exc,
                problems=(
                    self.problem(
                        signal,
                        str(exc),
                        timeout=f"{self.env.config.timeout:g}",
                        expected=str(self.target.service),
                        heard=Summary("heard.broken_reply"),
                    ),
                ),
            )
            self.skip(Summary("skip.broke_off", {"check": check}))
            return None

    def _greeting(self, conn: Conn, dialect: Dialect, *, announce: bool = True) -> Reply | None:
        svc = self.target.service
        cfg = self.env.config
        self.step("greeting")
        try:
            greeting = dialect.greeting(conn)
        except StepTimeout as exc:
            self.emit_error(
                "greeting",
                exc,
                problems=(self.problem("greeting.silent", str(exc), timeout=f"{cfg.timeout:g}"),),
            )
            self.skip(Summary("skip.no_greeting"))
            return None
        except Closed as exc:
            self.emit_error("greeting", exc, problems=(self.problem("greeting.closed", str(exc)),))
            self.skip(Summary("skip.closed"))
            return None
        except (ProtocolViolation, TooLong, NetError):
            heard_line = conn.transcript[-1][3:] if conn.transcript else ""
            other = identify(heard_line)
            if other and other is not svc:
                heard: str | Summary = str(other)
            else:
                heard = Summary("heard.tls" if conn.looks_like_tls else "heard.unknown")
            self.emit(
                "greeting",
                Status.FAIL,
                Summary(
                    "greeting.wrong_protocol", {"service": str(svc), "line": repr(heard_line[:80])}
                ),
                data={"heard": heard if isinstance(heard, str) else heard.key.split(".")[1]},
                problems=(
                    self.problem(
                        "greeting.wrong_protocol", heard_line[:300], expected=str(svc), heard=heard
                    ),
                ),
            )
            self.skip(Summary("skip.wrong_protocol", {"service": str(svc)}))
            return None
        if not greeting.ok:
            self.emit(
                "greeting",
                Status.FAIL,
                Summary("greeting.rejected", {"reply": _first(greeting)}),
                data={"greeting": greeting.text},
                problems=(self.problem("greeting.rejected", greeting.text),),
            )
            self.skip(Summary("skip.rejected"))
            return None
        if announce:
            self.emit(
                "greeting",
                Status.OK,
                Summary("greeting.ok", {"reply": _first(greeting)}),
                data={"greeting": greeting.text},
            )
        return greeting

    def _read_caps(
        self, conn: Conn, dialect: Dialect, greeting: Reply, *, after_tls: bool = False
    ) -> Capabilities | None:
        self.step("capabilities")
        try:
            return dialect.capabilities(conn, greeting)
        except (NetError, ProtocolViolation) as exc:
            if "greeting" not in {c.split(".", 1)[1] for c in self.emitted}:
                self.emit(
                    "greeting",
                    Status.OK,
                    Summary("greeting.ok", {"reply": _first(greeting)}),
                    data={"greeting": greeting.text},
                )
            if f"{self.target.service}.tls" not in self.emitted and not after_tls:
                self.emit(
                    "tls",
                    Status.SKIP,
                    Summary("tls.caps_unreadable"),
                )
            signal = (
                "connect.timeout"
                if isinstance(exc, StepTimeout)
                else (exc.signal if isinstance(exc, NetError) else "greeting.wrong_protocol")
            )
            self.emit_error(
                "capabilities",
                exc,
                problems=(
                    self.problem(
                        signal,
                        str(exc),
                        timeout=f"{self.env.config.timeout:g}",
                        expected=str(self.target.service),
                        heard=Summary("heard.broken_capabilities"),
                    ),
                ),
            )
            self.skip(Summary("skip.caps_unreadable"))
            return None

    def _finish(
        self,
        conn: Conn,
        dialect: Dialect,
        greeting: Reply,
        mode: Security,
        *,
        trusted: bool = False,
        caps: Capabilities | None = None,
        before: Capabilities | None = None,
    ) -> Conn:
        """The tail every path shares once the mode is settled: the capabilities (read now over
        TLS, or the plaintext ones already read), then the login stage. ``trusted``: the
        certificate verified, so a password may go out; ``before``: the capabilities read before
        STARTTLS, kept beside the ones after it."""
        if caps is None:
            caps = self._read_caps(conn, dialect, greeting, after_tls=True)
            if caps is None:
                return conn
        self._emit_caps(caps, before)
        self._login(conn, dialect, caps, mode, tls=mode is not Security.PLAIN, trusted=trusted)
        return conn

    def _emit_caps(self, caps: Capabilities, before: Capabilities | None) -> None:
        data = capability_data(caps)
        if before is not None:
            data["before_tls"] = capability_data(before)
        listed = ", ".join(list(caps.items)[:12])
        if listed:
            self.emit(
                "capabilities",
                Status.OK,
                Summary("capabilities.ok", {"keywords": listed}),
                data=data,
            )
        else:
            self.emit("capabilities", Status.OK, Summary("capabilities.none"), data=data)

    def _emit_mismatch(self, greeting: Reply, *, actual: Security) -> None:
        svc = self.target.service
        expected = self.target.security
        signal = "mode.plain_expected_ssl" if actual is Security.SSL else "mode.ssl_expected_plain"
        suggested = DEFAULT_PORTS.get(
            (svc, Security.SSL if actual is Security.SSL else Security.STARTTLS), ""
        )
        self.emit(
            "greeting",
            Status.FAIL,
            Summary(
                "greeting.mismatch",
                {"port": self.target.port, "actual": str(actual), "expected": str(expected)},
            ),
            data={"mode": str(actual), "greeting": greeting.text},
            problems=(
                self.problem(
                    signal,
                    greeting.text,
                    expected=str(expected),
                    actual=str(actual),
                    suggested_port=suggested,
                ),
            ),
        )

    def _login(
        self,
        conn: Conn,
        dialect: Dialect,
        caps: Capabilities,
        mode: Security,
        *,
        tls: bool,
        trusted: bool,
    ) -> None:
        stage = self.env.login_stage
        if stage is None:
            self.skip(Summary("skip.login_not_in_run"))
            return
        stage(LoginState(self.target, conn, dialect, caps, mode, tls, trusted, self))


def capability_data(caps: Capabilities) -> dict[str, Any]:
    size = caps.items.get("SIZE", "")
    return {
        "starttls": caps.has("STARTTLS") or caps.has("STLS"),
        "auth": caps.auth_mechanisms(),
        "size": int(size) if size.isdigit() else None,
        "smtputf8": caps.has("SMTPUTF8"),
        "pipelining": caps.has("PIPELINING"),
        "logindisabled": caps.has("LOGINDISABLED"),
        "keywords": list(caps.items)[:64],
    }


def _peek_quietly(conn: Conn, wait: float) -> int | None:
    """The first byte within ``wait``; None when silent or when the server hung up."""
    try:
        return conn.peek_first_byte(wait)
    except NetError:
        return None


def _first(reply: Reply) -> str:
    return reply.text.splitlines()[0][:200] if reply.text else ""


def net_summary(
    exc: NetError | ProtocolViolation, timeout: float, target: Target | None = None
) -> Summary:
    """A network or protocol error as a summary.

    ``error`` is the error's own (English) words, what the English template shows; the other
    params are the facts a translation quotes instead of those words.
    """
    params: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, ProtocolViolation):
        return Summary("net.protocol", params)
    signal = exc.signal
    if isinstance(exc, TlsFailed):
        if exc.verify_code is not None:
            key = "net.tls_verify"
            params["detail"] = exc.verify_message or str(exc)
        elif signal == "connect.timeout":
            key = "net.tls_timeout"
        else:
            key = "net.tls_failed"
    elif isinstance(exc, StepTimeout):
        key = "net.no_answer"
    elif isinstance(exc, Closed):
        key = "net.closed"
    elif isinstance(exc, TooLong):
        key = "net.too_long"
    else:
        key = {
            "connect.refused": "net.refused",
            "connect.timeout": "net.connect_timeout",
            "connect.unreachable": "net.unreachable",
            "dns.host_unresolved": "net.unresolved",
        }.get(signal, "net.error")
    if key in ("net.no_answer", "net.connect_timeout", "net.tls_timeout"):
        params["timeout"] = f"{timeout:g}"
    if target is not None:
        params["host"] = target.host
        params["address"] = f"{target.host}:{target.port}"
    return Summary(key, params)


def _caps_text(caps: Capabilities) -> str:
    return caps.reply.text if caps.reply else ""
