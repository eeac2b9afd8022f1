"""``check``: address → discovery → concurrent probes → diagnosis → Report.

This is the only place the stages meet; each hands the next a value from ``models.py``.
Dependencies (resolver, rule base, clock, observers) are arguments, so tests swap them freely.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from maildiag.address import parse_address
from maildiag.config import RunConfig
from maildiag.diagnose import diagnose, overall
from maildiag.models import Discovery, MultiReport, Observation, Problem, Report, Source
from maildiag.net import TlsContexts, make_tls_context
from maildiag.probes.session import Env
from maildiag.redact import Redactor
from maildiag.scheduler import HostLimiter, Scheduler, clock_job, session_job

T = TypeVar("T")

if TYPE_CHECKING:
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
    providers: ProviderDb | None = None,
    tls: TlsContexts | None = None,
) -> Report:
    """Check one address. ``limiter``: the per-host connection cap shared with the other runs
    of a ``--config`` run (else this run has its own); ``providers``: the provider database of
    ``config.rules_dirs`` when the caller has loaded it already, ``tls`` the TLS contexts shared
    with other runs (the exporter loads both once)."""
    from maildiag.discovery import discover
    from maildiag.discovery.providerdb import ProviderError
    from maildiag.discovery.providers import load_providers
    from maildiag.dnsclient import Dns
    from maildiag.errors import UsageError

    started = time.monotonic()
    address = parse_address(config.address)
    if dns is None:
        dns = Dns(config.resolver, timeout=config.timeout)
    if providers is None:
        try:
            providers = load_providers(config.rules_dirs)
        except ProviderError as exc:
            raise UsageError(f"cannot load the provider database: {exc}") from exc

    from maildiag.probes import auth, clock

    scheduler = Scheduler(
        max_per_host=config.max_per_host, on_observation=on_observation, limiter=limiter
    )
    # The clock needs no discovery: it starts at once, so a dead network costs one timeout, not
    # two. Its HTTPS fallback asks the provider's web host or the servers the user named.
    scheduler.start(
        [
            clock_job(
                config,
                now=now,
                provider=providers.by_domain(address.domain),
                targets=config.explicit,
                dns=dns,
            )
        ]
    )
    found = discover(
        address,
        explicit=config.explicit,
        only=config.only,
        dns=dns,
        timeout=config.timeout,
        ca_file=config.ca_file,
        providers=providers,
    )
    if on_observation is not None:
        on_observation(found.dns)
    targets = tuple(t for t in found.targets if t.service in config.only)
    provider_id = found.provider.id if found.provider is not None else None

    # built once and shared by every session: the stage keeps its one-login-per-service state,
    # the contexts load certifi once (an SSLContext may wrap sockets from several threads)
    redact = Redactor(config.password)
    login_stage = auth.make_login_stage(config, address, found.provider, redact)
    if tls is not None:
        verify_ctx, noverify_ctx = tls.verify(config.ca_file), tls.noverify()
    else:
        verify_ctx, noverify_ctx = make_tls_context(config.ca_file), make_tls_context(verify=False)

    interception = tuple(rules.interception)

    def make_env(emit: Callable[[Observation], None]) -> Env:
        return Env(
            config,
            emit,
            interception=interception,
            dns=dns,
            now=now,
            login_stage=login_stage,
            verify_ctx=verify_ctx,
            noverify_ctx=noverify_ctx,
            redact=redact,
        )

    scheduler.start([session_job(t, make_env) for t in targets])
    # The whole run is bounded: what the jobs have not said by then is reported as such.
    remaining = max(config.deadline - (time.monotonic() - started), config.timeout)
    observations = scheduler.collect(remaining)
    observations = blame_resolver(found.dns, observations)
    observations = auth.cross_check([found.dns, *observations])
    observations = clock.reconcile(observations)  # expiry explained by the clock: clock_skew
    results, findings = diagnose(
        observations, rules, lang=config.lang, provider=provider_id, servers=targets
    )
    status, exit_code = overall(results)
    discovery = found.discovery
    if discovery.source is None and targets:
        discovery = Discovery(Source.EXPLICIT, provider_id)
    return Report(
        address=address.original,
        discovery=discovery,
        servers=targets,
        checks=results,
        findings=findings,
        status=status,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - started) * 1000),
        transcript=config.transcript,
    )


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
