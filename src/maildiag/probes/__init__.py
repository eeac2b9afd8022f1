"""The checks maildiag runs, declared once: every other module reads this registry.

A check is a ``CheckSpec``: its name, whether it runs once per run (``dns``, ``clock``) or once per
server (``<svc>.connect`` ...), which services have it, whether it needs the password, the signals
its problems may carry (``maildiag.signals``) and the summary keys it may be described by
(``summary.<key>`` in rules/ui-report.yaml). Their order in ``CHECKS`` is the order a session runs
them and the order every report lists them.

Who reads it: the session (which checks a server gets, and which are left to ``skip``), the
scheduler (what a job owes when it did not finish), the login stage (its checks), ``diagnose``
(the order of results, and that every observation speaks only of what its check declared), the
docs' table of checks (a test holds docs/ to it) and the test that every summary key has its
words in rules/.

Adding a per-server check: a ``CheckSpec`` here, its summary templates in rules/ui-report.yaml,
the code that emits it (a session step or the login stage), and its signals' rules in rules/.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from maildiag.models import Observation, Service, Summary

__all__ = [
    "CHECKS",
    "CheckSpec",
    "Scope",
    "check_ids",
    "login_checks",
    "order",
    "spec_of",
    "undeclared",
]


class Scope(StrEnum):
    RUN = "run"  # once per run: the check id is the name ("dns", "clock")
    SERVER = "server"  # once per server: "<service>.<name>"


_ALL = frozenset(Service)

# Words every per-server check may be described by: a network step that failed (``net.*``, as the
# summary itself or nested in a skip reason), a bug in us, the run's deadline, and why it was
# skipped (``skip.*``).
NET_SUMMARIES = (
    "net.refused",
    "net.connect_timeout",
    "net.unreachable",
    "net.unresolved",
    "net.no_answer",
    "net.closed",
    "net.too_long",
    "net.tls_verify",
    "net.tls_timeout",
    "net.tls_failed",
    "net.protocol",
    "net.error",
)
SKIP_SUMMARIES = (
    "skip.not_run",
    "skip.unreachable",
    "skip.connection_failed",
    "skip.reconnect_failed",
    "skip.internal_error",
    "skip.unfinished",
    "skip.silent",
    "skip.no_greeting",
    "skip.closed",
    "skip.wrong_protocol",
    "skip.rejected",
    "skip.no_tls",
    "skip.starttls_refused",
    "skip.starttls_handshake",
    "skip.refetch_failed",
    "skip.caps_unreadable",
    "skip.broke_off",
    "skip.login_not_in_run",
    "skip.login_already_tried",
    "skip.login_unfinished",
    "skip.cert_unverified",
    "skip.not_encrypted",
    "skip.no_mailbox",
    "skip.cert_unverified_token",
    "skip.not_encrypted_token",
)
ANY_CHECK_SUMMARIES = ("internal_error", "run.deadline")
# What a server said instead of its protocol, as the wrong-protocol finding quotes it ({heard}).
HEARD_SUMMARIES = (
    "heard.tls",
    "heard.unknown",
    "heard.broken_reply",
    "heard.broken_capabilities",
)
# A clock offset, as the clock and certificate checks quote it (in summaries and in findings).
OFFSET_SUMMARIES = (
    "duration.d",
    "duration.dh",
    "duration.h",
    "duration.hm",
    "duration.m",
    "duration.ms",
    "duration.s",
    "clock.direction.ahead",
    "clock.direction.behind",
)
# A network step can fail at any point of a session: these signals may come from every step.
NET_SIGNALS = (
    "connect.refused",
    "connect.timeout",
    "connect.unreachable",
    "dns.host_unresolved",
    "dns.timeout",
    "dns.resolver_broken",
    "greeting.closed",
    "greeting.wrong_protocol",
    "tls.handshake_failed",
    "check.internal_error",
)


@dataclass(frozen=True, slots=True)
class CheckSpec:
    name: str
    scope: Scope
    establishes: str  # one line for the docs: what the check tells the user
    services: frozenset[Service] = _ALL  # SERVER scope: the services that have it
    needs_password: frozenset[Service] = frozenset()  # ... for these it runs only with one
    login_stage: bool = False  # emitted by the login stage, on the session's connection
    signals: tuple[str, ...] = ()
    summaries: tuple[str, ...] = ()  # keys its own summary may have
    nested: tuple[str, ...] = ()  # keys only quoted inside its summary or its problems' params

    def ids(self) -> tuple[str, ...]:
        """The check ids this spec stands for, in service order."""
        if self.scope is Scope.RUN:
            return (self.name,)
        return tuple(f"{s}.{self.name}" for s in Service if s in self.services)

    def all_signals(self) -> frozenset[str]:
        return frozenset(self.signals) | (
            frozenset(NET_SIGNALS) if self.scope is Scope.SERVER else frozenset()
        )

    def all_summaries(self) -> frozenset[str]:
        extra = (
            (*NET_SUMMARIES, *SKIP_SUMMARIES, *HEARD_SUMMARIES, *ANY_CHECK_SUMMARIES)
            if self.scope is Scope.SERVER
            else ANY_CHECK_SUMMARIES
        )
        return frozenset((*self.summaries, *self.nested, *extra))


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "dns",
        Scope.RUN,
        "the domain resolves, has MX, the server names resolve (with explicit servers only "
        "the last)",
        signals=(
            "dns.nxdomain",
            "dns.resolver_broken",
            "dns.no_mx",
            "dns.no_servers",
            "dns.timeout",
            "dns.error",
            "dns.host_unresolved",
        ),
        summaries=("dns.domain", "dns.explicit"),
        nested=(
            "dns.resolver_silent",
            "dns.resolver_denies",
            "dns.nxdomain",
            "dns.no_mx",
            "dns.null_mx",
            "dns.mx",
            "dns.no_servers",
            "dns.resolved",
        ),
    ),
    CheckSpec(
        "clock",
        Scope.RUN,
        "the local clock against a reference clock (SNTP, else an HTTPS Date header)",
        signals=("clock.skew", "check.internal_error", "connect.timeout"),
        summaries=(
            "clock.disabled",
            "clock.within_seconds",
            "clock.within",
            "clock.ahead",
            "clock.behind",
            "clock.no_reference",
        ),
        nested=OFFSET_SUMMARIES,
    ),
    CheckSpec(
        "connect",
        Scope.SERVER,
        "TCP reachability of host:port (refused and timed out told apart), each address of "
        "both families (RFC 8305)",
        signals=(
            "connect.family_timeout",
            "connect.family_refused",
            "connect.ports_blocked",
            "connect.host_down",
        ),
        summaries=(
            "connect.ok",
            "connect.family_timeout",
            "connect.family_refused",
            "connect.not_offered",
        ),
    ),
    CheckSpec(
        "greeting",
        Scope.SERVER,
        "the port speaks the expected protocol in the expected mode (a silent port is tried "
        "in the other mode)",
        signals=(
            "greeting.silent",
            "greeting.rejected",
            "mode.ssl_expected_plain",
            "mode.plain_expected_ssl",
        ),
        summaries=(
            "greeting.ok",
            "greeting.detected_ssl",
            "greeting.detected_plain",
            "greeting.mismatch",
            "greeting.silent_tls",
            "greeting.silent",
            "greeting.none",
            "greeting.wrong_protocol",
            "greeting.rejected",
        ),
    ),
    CheckSpec(
        "tls",
        Scope.SERVER,
        "TLS handshake, protocol version, chain, hostname, validity window, days to expiry, "
        "interception",
        signals=(
            "starttls.not_offered",
            "starttls.refused",
            "tls.cert_expired",
            "tls.cert_not_yet_valid",
            "tls.cert_untrusted",
            "tls.hostname_mismatch",
            "tls.expiring",
            "tls.old_protocol",
            "tls.interception",
            "tls.clock_skew",
        ),
        summaries=(
            "tls.ok",
            "tls.no_certificate",
            "tls.cert_expired",
            "tls.cert_not_yet_valid",
            "tls.hostname_mismatch",
            "tls.cert_untrusted",
            "tls.verify_failed",
            "tls.intercepted",
            "tls.intercepted_unknown",
            "tls.clock_ahead",
            "tls.clock_behind",
            "tls.plain_requested",
            "tls.none",
            "tls.starttls_not_offered",
            "tls.starttls_refused",
            "tls.caps_unreadable",
        ),
        nested=OFFSET_SUMMARIES,
    ),
    CheckSpec(
        "capabilities",
        Scope.SERVER,
        "EHLO / CAPABILITY / CAPA: STARTTLS, AUTH mechanisms, SIZE, SMTPUTF8",
        summaries=("capabilities.ok", "capabilities.none"),
    ),
    CheckSpec(
        "auth",
        Scope.SERVER,
        "smtp: whether the server demands AUTH (without a password or token), else the login; "
        "imap, pop3: the login (with a password, or an OAuth2 token: XOAUTH2, OAUTHBEARER)",
        needs_password=frozenset({Service.IMAP, Service.POP3}),
        login_stage=True,
        signals=(
            "reply",
            "auth.required",
            "auth.plaintext_refused",
            "auth.no_mechanism",
            "auth.protocol_disabled",
            "auth.login_form",
            "auth.plain_connection",
            "auth.oauth_not_offered",
            "auth.oauth_protocol_disabled",
        ),
        summaries=(
            "auth.needs_password",
            "auth.not_required",
            "auth.required",
            "envelope.refused",
            "auth.ok",
            "auth.refused",
            "auth.no_mechanism",
            "auth.no_mechanism_offered",
            "auth.login_disabled",
            "auth.offered_after_tls",
            "auth.offered",
            "auth.not_offered",
            "auth.oauth_refused",
            "auth.oauth_not_offered",
            "auth.mailbox_refused",
        ),
    ),
    CheckSpec(
        "sender",
        Scope.SERVER,
        "MAIL FROM:<--from> and RCPT TO:<ADDRESS> are accepted for this login",
        services=frozenset({Service.SMTP}),
        needs_password=frozenset({Service.SMTP}),
        login_stage=True,
        signals=("reply",),
        summaries=("sender.ok", "sender.login_failed", "envelope.refused", "auth.needs_password"),
    ),
)

_BY_ID: dict[str, tuple[int, CheckSpec]] = {
    check_id: (i, spec) for i, spec in enumerate(CHECKS) for check_id in spec.ids()
}


def spec_of(check_id: str) -> CheckSpec:
    """The spec of a check id; KeyError for an id no check declares."""
    return _BY_ID[check_id][1]


def order(check_id: str) -> int:
    """Where a check comes in every listing (an undeclared id sorts last)."""
    entry = _BY_ID.get(check_id)
    return entry[0] if entry is not None else len(CHECKS)


def check_ids(service: Service) -> tuple[str, ...]:
    """The checks every server of ``service`` gets, in the order a session runs them."""
    return tuple(
        f"{service}.{s.name}" for s in CHECKS if s.scope is Scope.SERVER and service in s.services
    )


def login_checks(service: Service) -> tuple[str, ...]:
    """The names (without the service) of the checks the login stage emits for ``service``."""
    return tuple(s.name for s in CHECKS if s.login_stage and service in s.services)


def undeclared(obs: Observation) -> list[str]:
    """What an observation says that its check did not declare (a bug in us: tests hold it)."""
    entry = _BY_ID.get(obs.check)
    if entry is None:
        return [f"unknown check id {obs.check!r}"]
    spec = entry[1]
    out = [
        f"{obs.check}: signal {p.signal!r}"
        for p in obs.problems
        if p.signal not in spec.all_signals()
    ]
    allowed = spec.all_summaries()
    out += [f"{obs.check}: summary {key!r}" for key in _keys(obs.summary) if key not in allowed]
    return out


def _keys(summary: Summary) -> Iterable[str]:
    yield summary.key
    for value in summary.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, Summary):
                yield from _keys(item)
