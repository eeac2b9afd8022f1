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
    from maildiag.alternatives import Finder
    from maildiag.discovery.providerdb import ProviderDb
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
    from maildiag.discovery import discover, discover_servers
    from maildiag.discovery.providerdb import ProviderError
    from maildiag.discovery.providers import load_providers
    from maildiag.dnsclient import Dns
    from maildiag.errors import UsageError

    started = time.monotonic()
    address = None if config.server else parse_address(config.address)
    tell = on_event or _ignore
    planned = [
        planned_checks(t.service for t in config.explicit)
        if config.server
        else planned_checks(config.only)
    ]
    tell(Planned(planned[0]))
    if dns is None:
        dns = Dns(config.resolver, timeout=config.timeout)
    if providers is None and address is not None:
        try:
            providers = load_providers(config.rules_dirs)
        except ProviderError as exc:
            raise UsageError(f"cannot load the provider database: {exc}") from exc

    from maildiag.alternatives import Finder
    from maildiag.probes import auth, clock
    from maildiag.reachability import HostProbes

    # A failure seen in the stream starts more work at once, in the same scheduler: the failing
    # server's alternatives, and the port-443 probe of a host whose mail port timed out.
    probes = HostProbes(timeout=config.timeout, dns=dns)
    finder: Finder | None = None

    def observed(obs: Observation) -> None:
        if on_observation is not None:
            on_observation(obs)
        more = list(finder.observe(obs)) if finder is not None else []
        if more:  # alternatives: their checks are reported too
            planned[0] += sum(len(job.expected) for job in more)
            tell(Planned(planned[0]))
        jobs = [*probes.observe(obs), *more]
        if jobs:
            scheduler.start(jobs)

    scheduler = Scheduler(
        max_per_host=config.max_per_host, on_observation=observed, limiter=limiter
    )
    if config.check_clock:
        # the whole measurement, fallbacks included, fits in one timeout (probes.clock.measure)
        reference = config.time_server or clock.DEFAULT_TIME_SERVER
        tell(StepStart("clock", reference, config.timeout, time.monotonic(), "clock"))
    # The clock needs no discovery: it starts at once, so a dead network costs one timeout, not
    # two. Its HTTPS fallback asks the provider's web host or the servers the user named.
    scheduler.start(
        [
            clock_job(
                config,
                now=now,
                provider=(
                    providers.by_domain(address.domain)
                    if providers is not None and address is not None
                    else None
                ),
                targets=config.explicit,
                dns=dns,
            )
        ]
    )
    # discovery: every source at once, one timeout plus a grace of at most 2 s (lookups.Budget)
    where = address.domain if address is not None else config.address
    grace = config.timeout + min(2.0, config.timeout)
    tell(StepStart("dns", where, grace, time.monotonic(), "dns"))
    if address is None:
        found = discover_servers(config.explicit, dns=dns, timeout=config.timeout)
    else:
        found = discover(
            address,
            explicit=config.explicit,
            only=config.only,
            dns=dns,
            timeout=config.timeout,
            ca_file=config.ca_file,
            providers=providers,
            port_map=dns.port_map,
        )
    if on_observation is not None:
        on_observation(found.dns)
    targets = tuple(t for t in found.targets if t.service in config.only)
    planned[0] = planned_checks(t.service for t in targets)
    tell(Planned(planned[0]))
    provider_id = found.provider.id if found.provider is not None else None

    # built once and shared by every session: the stage keeps its one-login-per-service state,
    # the contexts load certifi once, when the first handshake needs it
    redact = Redactor(config.password, config.oauth2_token)
    login_for: Callable[[Service], str | None]
    if address is None:
        login_stage = auth.make_server_stage()
        login_for = _no_login
    else:
        login_stage = auth.make_login_stage(config, address, found.provider, redact)
        login_for = auth.make_plan(config, address, found.provider, redact).login
    if tls is None:
        tls = TlsContexts()

    interception = tuple(rules.interception)

    def make_env(emit: Callable[[Observation], None]) -> Env:
        return Env(
            config,
            emit,
            interception=interception,
            dns=dns,
            now=now,
            login_stage=login_stage,
            tls=tls,
            redact=redact,
            on_step=on_event,
        )

    finder = Finder(
        targets,
        found.alternatives,
        lambda t: session_job(t, make_env),
        enabled=config.alternatives and not config.server,
    )
    scheduler.start([session_job(t, make_env) for t in targets])
    # The whole run is bounded: what the jobs have not said by then is reported as such.
    remaining = max(config.deadline - (time.monotonic() - started), config.timeout)
    observations = scheduler.collect(remaining)
    observations = probes.apply(observations)  # timeouts explained: ports blocked, host down
    if config.server:
        observations = not_offered(observations, targets, config.required)
    observations = blame_resolver(found.dns, observations)
    observations = auth.cross_check([found.dns, *observations])
    observations = clock.reconcile(observations)  # expiry explained by the clock: clock_skew
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
        duration_ms=int((time.monotonic() - started) * 1000),
        transcript=config.transcript,
        recommended=tuple(recommended),
        alternatives=tuple(tried),
    )


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

    need_login = config.password is not None and not config.server
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
