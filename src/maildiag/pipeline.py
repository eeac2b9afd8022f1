"""``check``: address → discovery → concurrent probes → diagnosis → Report.

This is the only place the stages meet; each hands the next a value from ``models.py``.
Dependencies (resolver, rule base, clock, observers) are arguments, so tests swap them freely.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from maildiag.address import parse_address
from maildiag.config import RunConfig
from maildiag.diagnose import diagnose, merge_findings, overall
from maildiag.models import (
    Alternative,
    CheckResult,
    Discovery,
    Finding,
    MultiReport,
    Observation,
    Planned,
    Problem,
    Recommended,
    Report,
    RunEvent,
    Service,
    Source,
    Status,
    StepStart,
    Summary,
    Target,
)
from maildiag.net import TlsContexts
from maildiag.probes import check_ids, spec_of
from maildiag.probes.session import Env
from maildiag.redact import Redactor
from maildiag.scheduler import HostLimiter, Scheduler, clock_job, session_job

T = TypeVar("T")

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.alternatives import Finder
    from maildiag.discovery import DiscoveryResult
    from maildiag.discovery.providerdb import Provider, ProviderDb
    from maildiag.dnsclient import Dns
    from maildiag.rulebase import RuleBase


def check_mailbox(
    config: RunConfig,
    *,
    rules: RuleBase,
    dns: Dns | None = None,
    on_observation: Callable[[Observation], None] | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    limiter: HostLimiter | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
    providers: ProviderDb | None = None,
    tls: TlsContexts | None = None,
) -> Report:
    """Check one address, or with ``config.server`` one server without a mailbox (its servers
    are ``config.explicit``). ``limiter``: the per-host connection cap shared with the other runs
    of a ``--config`` run (else this run has its own). ``on_event``: told how many checks the
    run will report and as each network step begins (a progress display). ``providers``: the
    provider database of ``config.rules_dirs`` when the caller has loaded it already, ``tls`` the
    TLS contexts shared with other runs (the exporter loads both once)."""
    from maildiag.dnsclient import Dns

    run = _Run(
        config,
        dns if dns is not None else Dns(config.resolver, timeout=config.timeout),
        now=now,
        limiter=limiter,
        on_observation=on_observation,
        on_event=on_event or _ignore,
    )
    address = None if config.server else parse_address(config.address)
    if providers is None and address is not None:
        providers = _load_providers(config)
    provider = providers.by_domain(address.domain) if providers and address else None
    run.start_clock(provider)  # needs no discovery: a dead network costs one timeout, not two
    found = run.discover(address, providers)
    targets = tuple(t for t in found.targets if t.service in config.only)
    run.plan(planned_checks(t.service for t in targets))
    login_for, finder = run.start_sessions(
        address, found, targets, rules, tls if tls is not None else TlsContexts()
    )
    observations = run.collect(found.dns, targets)
    provider_id = found.provider.id if found.provider is not None else None
    results, findings, recommended, tried = settle(
        observations,
        targets,
        finder,
        rules,
        config=config,
        provider=provider_id,
        login_for=login_for,
    )
    status, exit_code = overall(results)
    discovery = found.discovery
    if discovery.source is None and targets:
        discovery = Discovery(Source.EXPLICIT, provider_id)
    return Report(
        address=address.original if address is not None else config.address,
        discovery=discovery,
        servers=targets,
        checks=results,
        findings=findings,
        status=status,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - run.started) * 1000),
        transcript=config.transcript,
        recommended=tuple(recommended),
        alternatives=tuple(tried),
    )


def _load_providers(config: RunConfig) -> ProviderDb:
    from maildiag.discovery.providerdb import ProviderError
    from maildiag.discovery.providers import load_providers
    from maildiag.errors import UsageError

    try:
        return load_providers(config.rules_dirs)
    except ProviderError as exc:
        raise UsageError(f"cannot load the provider database: {exc}") from exc


class _Run:
    """One check's moving parts, in the order they start: the clock, discovery, the sessions
    (and, as failures stream in, alternatives and port-443 probes in the same scheduler), then
    the collection of everything they said by the deadline."""

    def __init__(
        self,
        config: RunConfig,
        dns: Dns,
        *,
        now: Callable[[], dt.datetime],
        limiter: HostLimiter | None,
        on_observation: Callable[[Observation], None] | None,
        on_event: Callable[[RunEvent], None],
    ) -> None:
        from maildiag.reachability import HostProbes

        self.started = time.monotonic()
        self.config, self.dns, self.now = config, dns, now
        self.on_observation, self.tell = on_observation, on_event
        self.finder: Finder | None = None
        # a host whose mail port timed out gets one connection to its port 443: blocked or down
        self.probes = HostProbes(timeout=config.timeout, dns=dns)
        self.scheduler = Scheduler(
            max_per_host=config.max_per_host, on_observation=self.observed, limiter=limiter
        )
        services = (t.service for t in config.explicit) if config.server else config.only
        self.planned = 0
        self.plan(planned_checks(services))

    def plan(self, checks: int) -> None:
        """How many checks the report will hold, as far as the run knows now."""
        self.planned = checks
        self.tell(Planned(checks))

    def observed(self, obs: Observation) -> None:
        """A check's outcome, as it comes: a failure may start more work at once."""
        if self.on_observation is not None:
            self.on_observation(obs)
        more = list(self.finder.observe(obs)) if self.finder is not None else []
        if more:  # alternatives: their checks are reported too
            self.plan(self.planned + sum(len(job.expected) for job in more))
        jobs = [*self.probes.observe(obs), *more]
        if jobs:
            self.scheduler.start(jobs)

    def start_clock(self, provider: Provider | None) -> None:
        """The clock check; its HTTPS fallback asks the provider's web host or the servers the
        user named. The whole measurement fits in one timeout (``probes.clock.measure``)."""
        from maildiag.probes import clock

        config = self.config
        if config.check_clock:
            reference = config.time_server or clock.DEFAULT_TIME_SERVER
            self.tell(StepStart("clock", reference, config.timeout, time.monotonic(), "clock"))
        job = clock_job(
            config, now=self.now, provider=provider, targets=config.explicit, dns=self.dns
        )
        self.scheduler.start([job])

    def discover(self, address: Address | None, providers: ProviderDb | None) -> DiscoveryResult:
        """Every source at once, one timeout plus a grace of at most 2 s (lookups.Budget); the
        servers of a server check need no discovery, only their addresses."""
        from maildiag.discovery import discover, discover_servers

        config = self.config
        where = address.domain if address is not None else config.address
        grace = config.timeout + min(2.0, config.timeout)
        self.tell(StepStart("dns", where, grace, time.monotonic(), "dns"))
        if address is None:
            found = discover_servers(config.explicit, dns=self.dns, timeout=config.timeout)
        else:
            found = discover(
                address,
                explicit=config.explicit,
                only=config.only,
                dns=self.dns,
                timeout=config.timeout,
                ca_file=config.ca_file,
                providers=providers,
                port_map=self.dns.port_map,
            )
        if self.on_observation is not None:
            self.on_observation(found.dns)
        return found

    def start_sessions(
        self,
        address: Address | None,
        found: DiscoveryResult,
        targets: tuple[Target, ...],
        rules: RuleBase,
        tls: TlsContexts,
    ) -> tuple[Callable[[Service], str | None], Finder]:
        """A session per server, sharing what is built once: the login stage (one login per
        service per run), the redactor, the TLS contexts (certifi loaded on the first
        handshake). Returns the login to recommend per service, and the finder of the
        alternatives the sessions' failures start."""
        from maildiag.alternatives import Finder
        from maildiag.probes import auth

        config = self.config
        redact = Redactor(config.password, config.oauth2_token)
        login_for: Callable[[Service], str | None]
        if address is None:
            login_stage = auth.make_server_stage()
            login_for = _no_login
        else:
            login_stage = auth.make_login_stage(config, address, found.provider, redact)
            login_for = auth.make_plan(config, address, found.provider, redact).login
        interception = tuple(rules.interception)

        def make_env(emit: Callable[[Observation], None]) -> Env:
            return Env(
                config,
                emit,
                interception=interception,
                dns=self.dns,
                now=self.now,
                login_stage=login_stage,
                tls=tls,
                redact=redact,
                on_step=None if self.tell is _ignore else self.tell,
            )

        self.finder = Finder(
            targets,
            found.alternatives,
            lambda t: session_job(t, make_env),
            enabled=config.alternatives and not config.server,
        )
        self.scheduler.start([session_job(t, make_env) for t in targets])
        return login_for, self.finder

    def collect(self, dns_obs: Observation, targets: tuple[Target, ...]) -> list[Observation]:
        """What every job said by the run's deadline (what did not finish is reported as such),
        then explained across checks: timeouts by port 443, ports a server does not offer, the
        resolver, logins across protocols, certificate expiry by the clock."""
        from maildiag.probes import auth, clock

        config = self.config
        remaining = max(config.deadline - (time.monotonic() - self.started), config.timeout)
        observations = self.scheduler.collect(remaining)
        observations = self.probes.apply(observations)
        if config.server:
            observations = not_offered(observations, targets, config.required)
        observations = blame_resolver(dns_obs, observations)
        observations = auth.cross_check([dns_obs, *observations])
        return clock.reconcile(observations)


def settle(
    observations: Sequence[Observation],
    targets: Sequence[Target],
    finder: Finder,
    rules: RuleBase,
    *,
    config: RunConfig,
    provider: str | None,
    login_for: Callable[[Service], str | None],
) -> tuple[tuple[CheckResult, ...], tuple[Finding, ...], list[Recommended], list[Alternative]]:
    """The configured servers' results and findings, what this run proved to work, and the
    alternatives tried (``maildiag.alternatives``).

    An alternative's own failures are not the configured servers' findings; its login is, when
    the run's one login of that service happened there (a refused password is the account's).
    """
    from maildiag import alternatives as alt

    need_login = config.has_secret and not config.server
    recommended = alt.recommend(
        targets, finder.alternatives(), observations, need_login=need_login, login_for=login_for
    )
    mine = alt.annotate(
        [o for o in observations if not finder.is_alternative(o.target)], targets, recommended
    )
    results, _ = diagnose(mine, rules, lang=config.lang, provider=provider, servers=targets)
    tried: list[Alternative] = []
    account: list[CheckResult] = []
    for cand in finder.alternatives():
        theirs = [o for o in observations if o.target == cand.target]
        checks, _ = diagnose(
            theirs, rules, lang=config.lang, provider=provider, servers=(cand.target,)
        )
        works = alt.proven(cand.target, theirs, need_login=need_login) is not None
        tried.append(Alternative(cand.target, cand.origin, works, checks))
        account += [c for c in checks if spec_of(c.id).login_stage and c.findings]
    return results, merge_findings([*results, *account]), recommended, tried


def not_offered(
    observations: Sequence[Observation],
    targets: Sequence[Target],
    required: frozenset[Service] = frozenset(),
) -> list[Observation]:
    """A server checked on its standard ports: a port that refuses or drops connections is one
    the server does not offer (``skip``), not a failure, when another port of the same service
    connects — a server with submission on 587 only is healthy — or, for a service not in
    ``required``, when another service of the server connects (a server without POP3). When
    nothing connects at all, or a required service does not, those stay failures."""
    connected = {
        o.target.service
        for o in observations
        if o.target is not None and o.check.endswith(".connect") and o.status is not Status.FAIL
    }
    several = {t.service for t in targets if sum(u.service is t.service for u in targets) > 1}
    out = []
    for obs in observations:
        t = obs.target
        if (
            t is not None
            and obs.check.endswith(".connect")
            and obs.status is Status.FAIL
            and all(p.signal in _UNOFFERED for p in obs.problems)
            and (
                (t.service in connected and t.service in several)
                or (t.service not in connected and t.service not in required and connected)
            )
        ):
            summary = Summary("connect.not_offered", {"port": t.port, "error": obs.summary})
            obs = dataclasses.replace(obs, status=Status.SKIP, summary=summary, problems=())
        out.append(obs)
    return out


# what a port the server does not offer looks like (a firewall that rejects, or drops)
_UNOFFERED = frozenset({"connect.refused", "connect.timeout", "connect.ports_blocked"})


def _no_login(service: Service) -> str | None:
    return None  # a server checked without a mailbox has no user name to recommend


def planned_checks(services: Iterable[Service]) -> int:
    """How many checks a run reports: ``dns`` and ``clock``, and every check of each server
    (one per service, or each port of a server checked without a mailbox); the alternatives
    tried later add theirs."""
    return 2 + sum(len(check_ids(s)) for s in services)


def _ignore(_: RunEvent) -> None:
    pass


_LOOKUP_SIGNALS = ("dns.host_unresolved", "dns.timeout")
_RESOLVER_SIGNALS = ("dns.resolver_broken", "dns.timeout")


def blame_resolver(dns_obs: Observation, observations: list[Observation]) -> list[Observation]:
    """When the ``dns`` check found the resolver dead or lying, a probe that could not look up
    its server failed for that same reason: give it the same problem, hence the same advice."""
    cause = next((p for p in dns_obs.problems if p.signal in _RESOLVER_SIGNALS), None)
    if cause is None:
        return observations
    out = []
    for obs in observations:
        if obs.check.endswith(".connect") and any(
            p.signal in _LOOKUP_SIGNALS for p in obs.problems
        ):
            problems = tuple(
                Problem(cause.signal, p.text, cause.params) if p.signal in _LOOKUP_SIGNALS else p
                for p in obs.problems
            )
            obs = dataclasses.replace(obs, problems=problems)
        out.append(obs)
    return out


def check_targets(
    specs: Sequence[T],
    check_one: Callable[[T], Report],
    max_parallel: int,
) -> MultiReport:
    """``check_one`` for every target, at most ``max_parallel`` at once; reports in order.

    ``check_one`` turns every problem of a target into its report; if it raises anyway, the
    remaining targets are cancelled and the exception propagates (the CLI's error shell turns it
    into one line and exit 3).
    """
    from maildiag.threads import DaemonPool

    if not specs:
        raise ValueError("check_targets needs at least one target")
    workers = max(1, min(int(max_parallel), len(specs)))
    started = time.monotonic()
    pool = DaemonPool(workers, "maildiag-target")  # never keeps the process alive at exit
    try:
        futures = [pool.submit(check_one, spec) for spec in specs]
        reports = [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return MultiReport.of(reports, int((time.monotonic() - started) * 1000))
