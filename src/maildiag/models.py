"""The vocabulary every stage speaks: str enums and frozen dataclasses.

Data flows one way (see STYLE.md):

    discover() -> [Target]  ->  run() -> [Observation]  ->  diagnose() -> [Finding]  ->  Report

A probe never builds advice. It records what happened in an ``Observation`` and, when something
needs explaining, a ``Problem``: a stable ``signal`` code (``connect.refused``, ``reply`` ...),
the server's exact words in ``text``, and ``params`` that rule titles may quote (``{port}``).
``diagnose()`` turns problems into ``Finding`` objects through the rule base in rules/.

Every enum is a ``StrEnum`` so ``json.dumps`` writes its value; ``to_json()`` on the report gives
the JSON of docs/reference.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from maildiag.errors import ExitCode


class Service(StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"


class Security(StrEnum):
    SSL = "ssl"  # implicit TLS from the first byte (465, 993, 995)
    STARTTLS = "starttls"  # plaintext greeting, then STARTTLS / STLS
    PLAIN = "plain"  # no TLS at all
    AUTO = "auto"  # unknown port without a mode: detected from what the server does


# How mail programs name the two TLS modes in their settings (protocol names, not words).
SECURITY_LABELS = {Security.SSL: "SSL/TLS", Security.STARTTLS: "STARTTLS"}


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class Severity(StrEnum):
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


class Category(StrEnum):
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    APP_PASSWORD_REQUIRED = "app_password_required"
    PROTOCOL_DISABLED = "protocol_disabled"
    SENDER_NOT_OWNED = "sender_not_owned"
    RELAY_DENIED = "relay_denied"
    SPAM_REJECTED = "spam_rejected"
    SENDER_POLICY = "sender_policy"
    IP_BLOCKLISTED = "ip_blocklisted"
    RATE_LIMITED = "rate_limited"
    GREYLISTED = "greylisted"
    RECIPIENT_UNKNOWN = "recipient_unknown"
    MAILBOX_FULL = "mailbox_full"
    MESSAGE_TOO_LARGE = "message_too_large"
    TLS_REQUIRED = "tls_required"
    TLS_MISMATCH = "tls_mismatch"
    CERT_UNTRUSTED = "cert_untrusted"
    CERT_EXPIRED = "cert_expired"
    CLOCK_SKEW = "clock_skew"
    TLS_INTERCEPTION = "tls_interception"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_TIMEOUT = "connection_timeout"
    DNS_FAILURE = "dns_failure"
    ACCOUNT_BLOCKED = "account_blocked"
    OTHER = "other"


class Source(StrEnum):
    EXPLICIT = "explicit"
    PROVIDER = "provider"
    SRV = "srv"
    AUTOCONFIG = "autoconfig"
    ISPDB = "ispdb"  # Thunderbird's ISPDB online (the shipped copy is part of "provider")
    AUTODISCOVER = "autodiscover"  # Microsoft Autodiscover (POX, Exchange Online JSON)
    MX = "mx"
    GUESS = "guess"


# how sure an answer is, by where it came from (discovery's certainty; ``settings`` prints it)
CERTAINTY: dict[Source, str] = {
    Source.EXPLICIT: "certain",
    Source.PROVIDER: "certain",
    Source.SRV: "published",
    Source.AUTOCONFIG: "published",
    Source.ISPDB: "certain",
    Source.AUTODISCOVER: "published",
    Source.MX: "via_mx",
    Source.GUESS: "guess",
}

_STATUS_RANK = {Status.SKIP: 0, Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.FAIL: 2}


def status_rank(status: Status) -> int:
    return _STATUS_RANK[status]


def severity_rank(severity: Severity) -> int:
    return _SEVERITY_RANK[severity]


def severity_status(severity: Severity) -> Status:
    """The check status a finding of this severity implies (``info`` changes nothing)."""
    return {Severity.INFO: Status.OK, Severity.WARN: Status.WARN, Severity.FAIL: Status.FAIL}[
        severity
    ]


@dataclass(frozen=True, slots=True)
class Target:
    """One server endpoint to check."""

    service: Service
    host: str  # as the user or discovery named it (IDN in its Unicode form is fine)
    port: int
    security: Security
    source: Source = Source.EXPLICIT

    @property
    def label(self) -> str:
        return f"{self.service}://{self.host}:{self.port}/{self.security}"

    @property
    def hostport(self) -> str:
        """``host:port`` as a person writes it: ``[::1]:25`` for an IPv6 literal."""
        return hostport(self.host, self.port)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "host": self.host,
            "port": self.port,
            "security": str(self.security),
        }


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:25``, not ``::1:25``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a probe saw that needs explaining; ``diagnose()`` matches it against rules.

    signal: a stable code from ``maildiag.signals`` (``reply`` for a server reply to match by text)
    text:   the server's or the library's exact words (kept verbatim: rules match on them)
    params: values rule titles and steps may quote, e.g. ``{"port": 465, "actual": "ssl"}``
    """

    signal: str
    text: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Summary:
    """One line of facts about a check, as a key and the facts it quotes; no words.

    ``key`` names the template ``summary.<key>`` in rules/ui-report.yaml, whose ``en`` text is
    what JSON shows and whose ``ru`` text the Russian report shows. A param may itself be a
    ``Summary`` (a nested fact, rendered first) or a list of them (joined with "; ").
    """

    key: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What other stages read of a ``<svc>.tls`` check (the JSON ``data`` says the same)."""

    checked_at: dt.datetime  # the local time the certificates were judged at
    warn_days: int
    crit_days: int
    days_to_expiry: int | None  # of the leaf; None without a certificate
    # validity windows of every certificate judged (the leaf and the intermediates sent)
    windows: tuple[tuple[dt.datetime, dt.datetime], ...] = ()


@dataclass(frozen=True, slots=True)
class ClockFacts:
    """What other stages read of the ``clock`` check."""

    offset_seconds: float  # local minus reference: positive when the local clock is ahead
    source: str
    reference: str  # the reference time, ISO 8601


@dataclass(frozen=True, slots=True)
class LoginFacts:
    """What other stages read of a login check (``<svc>.auth`` with a password, ``smtp.sender``)."""

    login: str
    accepted: bool | None  # None: no attempt could be made
    refused_at: str | None = None  # "credentials", or the SMTP command ("MAIL", "RCPT")


CheckFacts = TlsFacts | ClockFacts | LoginFacts


@dataclass(frozen=True, slots=True)
class Observation:
    """What one check established about one target (or, for ``dns``/``clock``, about the run)."""

    check: str  # stable id: "dns", "clock", "smtp.connect", "imap.tls", ...
    status: Status
    summary: Summary  # the facts in one line (rendered from rules/ui-report.yaml), no advice
    target: Target | None = None
    data: Mapping[str, Any] = field(default_factory=dict)  # facts for JSON
    problems: tuple[Problem, ...] = ()
    transcript: tuple[str, ...] = ()
    duration_ms: int = 0
    facts: CheckFacts | None = None  # typed facts other stages read (see maildiag.probes)


@dataclass(frozen=True, slots=True)
class StepStart:
    """A step of the run begins: what the run waits for now, and for how long at most.

    The pipeline and the sessions announce each network step (discovery, the clock, a server's
    connect, greeting, TLS handshake, capabilities, login) through ``on_event``, so a progress
    display can say what it is waiting for without reading the observations.
    """

    check: str  # the check the step belongs to: "dns", "clock", "smtp.tls" ...
    where: str  # host:port, the domain, or the time server
    timeout: float  # seconds the step may take at most
    started: float  # time.monotonic() when it began
    lane: str  # steps of one lane (a server's session, discovery, the clock) never overlap


@dataclass(frozen=True, slots=True)
class Planned:
    """How many checks the run will report: said at the start (from the services asked for) and
    again once discovery knows the servers."""

    checks: int


RunEvent = StepStart | Planned


@dataclass(frozen=True, slots=True)
class Finding:
    """A diagnosis: what is wrong and what to do, from one rule, in one language."""

    rule: str
    category: Category
    severity: Severity
    title: str
    steps: tuple[str, ...]
    check: str | None = None  # the check id it came from; None for ``explain``
    evidence: str = ""  # the exact text that matched, or what the probe saw
    links: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "category": str(self.category),
            "severity": str(self.severity),
            "check": self.check,
            "title": self.title,
            "steps": list(self.steps),
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """An observation after diagnosis: the unit renderers show."""

    observation: Observation
    status: Status
    findings: tuple[Finding, ...]
    summary: str = ""  # the observation's summary in English (what JSON shows)

    @property
    def id(self) -> str:
        return self.observation.check

    def to_json(self, *, transcript: bool = False) -> dict[str, Any]:
        obs = self.observation
        out: dict[str, Any] = {
            "id": obs.check,
            "service": str(obs.target.service) if obs.target else None,
            "host": obs.target.host if obs.target else None,
            "port": obs.target.port if obs.target else None,
            "status": str(self.status),
            "summary": self.summary,
            "duration_ms": obs.duration_ms,
            "data": dict(obs.data),
            "findings": [f.to_json() for f in self.findings],
        }
        if transcript:
            out["transcript"] = list(obs.transcript)
        return out


@dataclass(frozen=True, slots=True)
class Discovery:
    source: Source | None
    provider: str | None = None
    note: str = ""  # a fact about the discovery, e.g. "SRV _submissions._tcp.example.test"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source) if self.source else None,
            "provider": self.provider,
        }


@dataclass(frozen=True, slots=True)
class Recommended:
    """Settings this run proved to work for one service: TCP, the greeting, TLS with a verified
    certificate, and the login when a password was given (``recommended`` in JSON)."""

    service: Service
    host: str
    port: int
    security: Security  # the mode the port really speaks (ssl or starttls)
    login: str | None  # the user name to enter; None for a server checked without a mailbox

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "host": self.host,
            "port": self.port,
            "security": str(self.security),
            "login": self.login,
        }


@dataclass(frozen=True, slots=True)
class Alternative:
    """Another way to a service, tried because the configured server failed."""

    target: Target
    origin: str  # "standard" (the other port and mode on the same host), or a discovery source
    works: bool  # proven as ``Recommended`` requires
    checks: tuple[CheckResult, ...]

    def to_json(self, *, transcript: bool = False) -> dict[str, Any]:
        return {
            **self.target.to_json(),
            "origin": self.origin,
            "works": self.works,
            "checks": [c.to_json(transcript=transcript) for c in self.checks],
        }


REPORT_SCHEMA = "maildiag.report/1"
MULTI_SCHEMA = "maildiag.multi/1"
EXPLAIN_SCHEMA = "maildiag.explain/1"


@dataclass(frozen=True, slots=True)
class Report:
    address: str
    discovery: Discovery
    servers: tuple[Target, ...]
    checks: tuple[CheckResult, ...]
    findings: tuple[Finding, ...]
    status: Status
    exit_code: ExitCode
    duration_ms: int = 0
    transcript: bool = False  # include each check's transcript in JSON
    recommended: tuple[Recommended, ...] = ()  # per service, what this run proved to work
    alternatives: tuple[Alternative, ...] = ()  # what was tried when a server failed
    name: str | None = None  # the target's ``name`` in a targets file (``--config``)

    @property
    def label(self) -> str:
        """What names this report's target: its ``name``, else its address."""
        return self.name or self.address

    def by_server(self) -> tuple[list[CheckResult], dict[Target, list[CheckResult]]]:
        """The run-level checks (dns, clock), and each server's checks in the servers' order
        (a server without checks has an empty list)."""
        run_level = [c for c in self.checks if c.observation.target is None]
        servers: dict[Target, list[CheckResult]] = {t: [] for t in self.servers}
        for check in self.checks:
            target = check.observation.target
            if target is not None:
                servers.setdefault(target, []).append(check)
        return run_level, servers

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "address": self.address,
            "status": str(self.status),
            "exit_code": int(self.exit_code),
            "discovery": self.discovery.to_json(),
            "servers": [t.to_json() for t in self.servers],
            "checks": [c.to_json(transcript=self.transcript) for c in self.checks],
            "findings": [f.to_json() for f in self.findings],
            "recommended": [r.to_json() for r in self.recommended],
            "alternatives": [a.to_json(transcript=self.transcript) for a in self.alternatives],
        }


@dataclass(frozen=True, slots=True)
class MultiReport:
    """The combined result of a ``--config`` run: one ``Report`` per target, in file order."""

    reports: tuple[Report, ...]
    status: Status
    exit_code: ExitCode
    duration_ms: int = 0

    @classmethod
    def of(cls, reports: Sequence[Report], duration_ms: int = 0) -> MultiReport:
        """Status: the worst report status; exit code: the worst report exit code."""
        if not reports:
            raise ValueError("a MultiReport needs at least one report")
        status = max((r.status for r in reports), key=status_rank)
        exit_code = ExitCode(max(int(r.exit_code) for r in reports))
        return cls(tuple(reports), status, exit_code, duration_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": MULTI_SCHEMA,
            "status": str(self.status),
            "exit_code": int(self.exit_code),
            "reports": [_named(r) for r in self.reports],
        }


def _named(report: Report) -> dict[str, Any]:
    """A report of a ``--config`` run in JSON, saying which target it is: its ``name`` (the
    address unless the targets file named it), right after the schema."""
    out = report.to_json()
    return {"schema": out.pop("schema"), "name": report.label, **out}
