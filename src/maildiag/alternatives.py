"""A configuration that works: when a server fails, the other ways to the same service, and the
settings this run proved to work (``Report.recommended``).

When a configured server fails where another server or port could do better — refused, no answer,
a name that does not resolve, a port that does not speak the protocol or TLS as expected, a
certificate for another name or from an unknown CA — the ``Finder`` names the alternatives, in
this order, at most ``MAX_TRIED`` per service:

1. the chosen discovery source's other servers for the service (the provider entry's other
   servers, more SRV records, the autoconfig file's other servers:
   ``DiscoveryResult.alternatives``);
2. the standard alternative on the same host: SMTP 465 <-> 587, IMAP 993 <-> 143, POP3 995 <-> 110,
   each in its own mode (RFC 8314: implicit TLS on 465/993/995, STARTTLS on 587/143/110); from a
   port that is neither (25, 2525, a custom one) both.

A server already checked is never an alternative, and the same port in the other mode needs no
connection of its own: the session works out the mode a port really speaks and carries on in it.
The pipeline starts the alternatives as soon as the failure is seen, as jobs of the same scheduler
(the per-host cap and the run's deadline hold for them too). Their login goes through the run's
login stage, which tries a password once per service per run: an alternative logs in only when
the configured server did not get as far as sending it.

``recommend`` then says, per service, which settings this run proved to work: TCP, the greeting,
TLS with a verified certificate, the capabilities, and the login when a password was given (see
``proven``). The configured server when it works — in the mode its port really speaks — else the
first alternative that works; no entry for a service where nothing does. ``annotate`` hands the
winning alternative to the failing server's findings (``alternative``), whose first step then
names it (``diagnose``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from maildiag.config import DEFAULT_PORTS
from maildiag.models import (
    SECURITY_LABELS,
    LoginFacts,
    Observation,
    Problem,
    Recommended,
    Security,
    Service,
    Status,
    Target,
)

if TYPE_CHECKING:
    from maildiag.scheduler import Job

__all__ = ["MAX_TRIED", "TRIGGERS", "Candidate", "Finder", "annotate", "proven", "recommend"]

# Failures another server or port may not have. Not here: a refused login (the password is the
# same everywhere), an expired certificate or a wrong clock (the same certificate, the same clock),
# interception (the same antivirus), a dead resolver (the same resolver).
TRIGGERS = frozenset(
    {
        "connect.refused",
        "connect.timeout",
        "connect.unreachable",
        "dns.host_unresolved",
        "greeting.silent",
        "greeting.closed",
        "greeting.wrong_protocol",
        "greeting.rejected",
        "starttls.not_offered",
        "starttls.refused",
        "tls.handshake_failed",
        "tls.hostname_mismatch",
        "tls.cert_untrusted",
    }
)
# failures that take the host's other ports with them
_HOST_GONE = frozenset({"dns.host_unresolved"})
MAX_TRIED = 4  # per service: polite to the servers, and done within the run's deadline
_MODES = (Security.SSL, Security.STARTTLS)  # RFC 8314 4.1: implicit TLS first


@dataclass(frozen=True, slots=True)
class Candidate:
    target: Target
    origin: str  # "standard", or the discovery source that named it ("provider", "srv", ...)


def standard(target: Target) -> list[Target]:
    """The standard ports of the target's service on its host, other than its own port."""
    out = []
    for mode in _MODES:
        port = DEFAULT_PORTS[(target.service, mode)]
        if port != target.port:
            out.append(Target(target.service, target.host, port, mode, target.source))
    return out


def _key(target: Target) -> tuple[Service, str, int]:
    return (target.service, target.host.lower().rstrip("."), target.port)


class Finder:
    """Which alternatives to start when a configured server fails (``observe``), and which were.

    ``primaries``: the servers the run checks; ``discovered``: the discovery source's other
    servers per service; ``make_job``: the scheduler job that checks one alternative.
    """

    def __init__(
        self,
        primaries: Sequence[Target],
        discovered: Mapping[Service, Sequence[Target]],
        make_job: Callable[[Target], Job],
        *,
        enabled: bool = True,
    ) -> None:
        self.primaries = tuple(primaries)
        self.discovered = discovered
        self.make_job = make_job
        self.enabled = enabled
        self.tried: dict[Service, list[Candidate]] = {}

    def observe(self, obs: Observation) -> list[Job]:
        """The jobs to start for this observation: the alternatives of a server that just failed
        in a way another server or port may not (once per service)."""
        target = obs.target
        if (
            not self.enabled
            or target is None
            or obs.status is not Status.FAIL
            or target.service in self.tried
            or target not in self.primaries
        ):
            return []
        signals = {p.signal for p in obs.problems}
        if not signals & TRIGGERS:
            return []
        found = self.candidates(target, same_host=not signals & _HOST_GONE)
        self.tried[target.service] = found
        return [self.make_job(c.target) for c in found]

    def candidates(self, primary: Target, *, same_host: bool = True) -> list[Candidate]:
        taken = {_key(t) for t in self.primaries}
        out: list[Candidate] = []
        offered = [
            *(Candidate(t, str(t.source)) for t in self.discovered.get(primary.service, ())),
            *(Candidate(t, "standard") for t in standard(primary)),
        ]
        host = primary.host.lower().rstrip(".")
        for cand in offered:
            if cand.target.security not in _MODES or _key(cand.target) in taken:
                continue
            if not same_host and _key(cand.target)[1] == host:
                continue
            taken.add(_key(cand.target))
            out.append(cand)
        return out[:MAX_TRIED]

    def alternatives(self) -> list[Candidate]:
        """Every alternative started, services in order."""
        return [c for service in Service for c in self.tried.get(service, ())]

    def is_alternative(self, target: Target | None) -> bool:
        return target is not None and any(c.target == target for c in self.alternatives())


def proven(
    target: Target, observations: Iterable[Observation], *, need_login: bool
) -> tuple[Security, LoginFacts | None] | None:
    """The mode in which ``target`` was proven to work, with the accepted login, or None.

    Proven: connected (a ``warn`` for the other address family is still a connection); greeted
    in the mode the port really speaks (a mode the user did not expect counts: that is the mode
    to use); TLS with a verified certificate; capabilities read; and with a password, the login
    accepted.
    """
    checks = {o.check.split(".", 1)[1]: o for o in observations if o.target == target}
    connect, greeting = checks.get("connect"), checks.get("greeting")
    tls, caps = checks.get("tls"), checks.get("capabilities")
    if connect is None or connect.status not in (Status.OK, Status.WARN):
        return None
    if greeting is None or not (
        greeting.status is Status.OK or greeting.summary.key == "greeting.mismatch"
    ):
        return None
    try:
        mode = Security(str(greeting.data.get("mode", target.security)))
    except ValueError:
        return None
    if mode not in _MODES or tls is None or tls.summary.key != "tls.ok":
        return None
    if caps is None or caps.status is not Status.OK:
        return None
    login = checks.get("auth")
    facts = login.facts if login is not None and isinstance(login.facts, LoginFacts) else None
    if need_login and (facts is None or facts.accepted is not True):
        return None
    return mode, facts


def recommend(
    primaries: Sequence[Target],
    tried: Sequence[Candidate],
    observations: Sequence[Observation],
    *,
    need_login: bool,
    login_for: Callable[[Service], str | None],
) -> list[Recommended]:
    """Per service, the first of its configured servers, then of its alternatives, that this run
    proved to work (``proven``)."""
    out = []
    for service in Service:
        order = [t for t in primaries if t.service is service]
        order += [c.target for c in tried if c.target.service is service]
        for target in order:
            found = proven(target, observations, need_login=need_login)
            if found is None:
                continue
            mode, facts = found
            login = facts.login if facts is not None and need_login else login_for(service)
            out.append(Recommended(service, target.host, target.port, mode, login))
            break
    return out


def settings_text(entry: Recommended) -> str:
    """``smtp.example.com:587 STARTTLS``: how a finding's step names working settings."""
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    return f"{host}:{entry.port} {SECURITY_LABELS.get(entry.security, str(entry.security))}"


def annotate(
    observations: Sequence[Observation],
    primaries: Sequence[Target],
    recommended: Sequence[Recommended],
) -> list[Observation]:
    """The failing checks of a configured server whose service works with other settings: their
    problems carry those settings as ``alternative`` (a step of the finding names them).

    Only where the service has one configured server (a mailbox's): a server checked on all its
    ports (server mode) lists what works under "Settings that work" instead.
    """
    better: dict[Target, str] = {}
    for entry in recommended:
        mine = [t for t in primaries if t.service is entry.service]
        if len(mine) != 1:
            continue
        primary = mine[0]
        same = (primary.host, primary.port, primary.security) == (
            entry.host,
            entry.port,
            entry.security,
        )
        if not same:
            better[primary] = settings_text(entry)
    if not better:
        return list(observations)
    out = []
    for obs in observations:
        settings = better.get(obs.target) if obs.target is not None else None
        if settings is not None and obs.status is Status.FAIL and obs.problems:
            problems = tuple(
                Problem(p.signal, p.text, {**p.params, "alternative": settings})
                for p in obs.problems
            )
            obs = replace(obs, problems=problems)
        out.append(obs)
    return out
