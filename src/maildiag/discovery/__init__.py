"""Discovery: which servers to check for an address, where that knowledge came from, and the
``dns`` check.

Order (Thunderbird's, with DNS SRV added), per service the first source that has an answer:

1. explicit ``--smtp/--imap/--pop3`` (``explicit``);
2. the provider database, by the address's domain (``provider``): the hand-written entries of
   rules/providers, then Thunderbird's ISPDB shipped with maildiag — no network needed;
3. DNS SRV records, RFC 6186 / RFC 8314 (``srv``);
4. the domain's own autoconfig file (``autoconfig``);
5. Thunderbird's ISPDB online, autoconfig.thunderbird.net (``ispdb``);
6. Microsoft Autodiscover: the domain's POX service, or Exchange Online's JSON answer for an
   Exchange-like domain (``autodiscover``);
7. MX records matched against the provider database (``mx``);
8. when none of these found anything: conventional names and the MX hosts, probed (``guess``).

A service a source does not cover is filled from the next source (SRV may publish IMAP but not
POP3), a service SRV marks as not offered (target ".") is never filled, and guesses are made
only when no other source found anything. ``discovery.source`` is ``explicit`` when every checked
service was given explicitly, otherwise the highest-ranking source among the discovered servers;
each ``Target.source`` tells its own, and ``DiscoveryResult.certainty`` how sure each answer is.
Services not asked for (``only``) are not looked up at all: with every wanted server explicit,
nothing about the address's domain is asked (only the servers' own names are resolved).

Time: every step starts at once (``steps.build_steps``), and discovery returns as soon as the
answer is final — every wanted service has its answer from a step with no unfinished step ranked
above it — or at the budget's hard deadline (see ``lookups.Budget``): a network that never answers
costs one ``timeout`` plus a grace of at most two seconds, not one per source. Network trouble
never raises: it becomes Problems on the ``dns`` observation (signals ``dns.*``), and discovery
that finds nothing returns ``Discovery(source=None)`` with no targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maildiag.discovery.lookups import Budget, Lookups, is_ip
from maildiag.discovery.steps import Context, Offer, Step, build_steps
from maildiag.models import CERTAINTY, Discovery, Observation, Service, Source, Target
from maildiag.threads import DaemonPool

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.discovery.providerdb import Provider, ProviderDb
    from maildiag.dnsclient import Dns

__all__ = ["DiscoveryResult", "discover", "discover_servers", "SERVICE_ORDER", "SOURCE_RANK"]

SERVICE_ORDER: tuple[Service, ...] = (Service.SMTP, Service.IMAP, Service.POP3)
SOURCE_RANK: dict[Source, int] = {
    Source.EXPLICIT: 0,
    Source.PROVIDER: 1,
    Source.SRV: 2,
    Source.AUTOCONFIG: 3,
    Source.ISPDB: 4,
    Source.AUTODISCOVER: 5,
    Source.MX: 6,
    Source.GUESS: 7,
}


@dataclass(frozen=True)
class DiscoveryResult:
    discovery: Discovery  # source + provider id
    targets: tuple[Target, ...]  # ordered smtp, imap, pop3; each Target.source set
    dns: Observation  # the `dns` check (check="dns"), with Problems
    provider: Provider | None
    # login name per service when the source says which form the server wants
    logins: Mapping[Service, str] = field(default_factory=dict)
    # how sure each answer is: certain, published, via_mx, answered (a guess whose probe got the
    # protocol's greeting), resolves (a guess by name only)
    certainty: Mapping[Service, str] = field(default_factory=dict)
    # the chosen source's other servers per service, in its order (``maildiag.alternatives``)
    alternatives: Mapping[Service, tuple[Target, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    address: Address
    given: Mapping[Service, Target]
    needed: tuple[Service, ...]
    home: Provider | None  # the provider database's entry for the address's domain


@dataclass
class _Choice:
    chosen: dict[Service, Target]
    alternatives: dict[Service, tuple[Target, ...]] = field(default_factory=dict)
    logins: dict[Service, str] = field(default_factory=dict)
    certainty: dict[Service, str] = field(default_factory=dict)
    not_offered: set[Service] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    provider: Provider | None = None
    custom_domain: bool = False


def discover(
    address: Address,
    *,
    explicit: Sequence[Target] = (),
    only: frozenset[Service] = frozenset(Service),
    dns: Dns,
    timeout: float,
    ca_file: str | None = None,
    port_map: Mapping[int, int] | None = None,
    providers: ProviderDb | None = None,
) -> DiscoveryResult:
    """Find the servers for ``address``; never raises for network trouble (see module doc).

    ``providers``: the provider database (default: the built-in one);
    ``port_map``: connect to ``port_map[p]`` wherever discovery itself would connect to port
    ``p`` (443 for HTTPS, the mail ports of guesses) — for tests on loopback.
    """
    from maildiag.discovery.providers import load_providers

    db = providers if providers is not None else load_providers()
    plan = _plan(address, explicit, only, db)
    budget = Budget(timeout)
    look = Lookups(dns, budget)
    # daemon workers: a lookup or fetch still running at the deadline is abandoned, and it does
    # not keep the process alive after the report (maildiag.threads)
    pool = DaemonPool(32, "discover")
    try:
        ctx = Context(address, plan.needed, look, budget, db, pool, ca_file, port_map or {})
        steps = build_steps(ctx, plan.home)
        _start(plan, ctx, steps)
        _gather(plan, ctx, steps)
        choice = _choose(plan, steps)
        look.resolve_all([t.host for t in choice.chosen.values()])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return _result(plan, ctx, steps, choice)


def discover_servers(targets: Sequence[Target], *, dns: Dns, timeout: float) -> DiscoveryResult:
    """A server checked without a mailbox (``check HOST[:PORT]``): nothing to discover; the
    ``dns`` check says whether the server's name resolves."""
    from maildiag.discovery.dnscheck import DnsFacts, observe

    budget = Budget(timeout)
    look = Lookups(dns, budget)
    look.resolve_all([t.host for t in targets])
    facts = DnsFacts(
        address=None,
        look=look,
        budget=budget,
        targets=targets,
        needed=(),
        mx=None,
        known_domain=False,
        explicit_given=True,
        discovered_any=False,
        data={"resolver": dns.label},
    )
    return DiscoveryResult(Discovery(Source.EXPLICIT), tuple(targets), observe(facts), None)


def _plan(
    address: Address, explicit: Sequence[Target], only: frozenset[Service], db: ProviderDb
) -> _Plan:
    wanted = [s for s in SERVICE_ORDER if s in only]
    given: dict[Service, Target] = {}
    for target in explicit:
        if target.service in only and target.service not in given:
            given[target.service] = target
    needed = tuple(s for s in wanted if s not in given)
    home = db.by_domain(address.domain)
    return _Plan(address, given, needed, home)


def _start(plan: _Plan, ctx: Context, steps: Sequence[Step]) -> None:
    for target in plan.given.values():
        if not is_ip(target.host):  # an address needs no lookup, nor a thread to make it
            ctx.pool.submit(ctx.look.resolve, target.host)
    if plan.needed:
        ctx.pool.submit(ctx.look.mx, ctx.domain)  # the dns check reports it in every case
    for step in steps:
        step.start()


def _gather(plan: _Plan, ctx: Context, steps: Sequence[Step]) -> None:
    """Wait until the answer is final (see the module docstring) or the hard deadline."""
    pending = {f for step in steps for f in step.futures}
    while pending and ctx.budget.left() > 0:
        if _final(plan, steps) and ctx.look.record_done("MX", ctx.domain):
            return
        done, pending = wait(pending, timeout=ctx.budget.left(), return_when=FIRST_COMPLETED)
        if not done:
            return
    if plan.needed and ctx.budget.left() > 0:
        ctx.look.mx(ctx.domain)  # the dns check needs its outcome (it waits within the budget)


def _final(plan: _Plan, steps: Sequence[Step]) -> bool:
    """Whether no unfinished step could still change the choice."""
    remaining = set(plan.needed)
    found_any = False
    for step in steps:
        if not remaining:
            return True
        if step.source is Source.GUESS and found_any:
            return True  # guesses only when nothing else found anything
        if not step.settled():
            return False
        offer = step.offer()
        if offer is not None:
            found_any = found_any or any(s in remaining for s in offer.servers)
            remaining -= set(offer.servers) | offer.not_offered
    return True


def _choose(plan: _Plan, steps: Sequence[Step]) -> _Choice:
    choice = _Choice(chosen=dict(plan.given), provider=plan.home)
    for step in steps:
        if step.source is Source.GUESS and any(s in choice.chosen for s in plan.needed):
            break
        offer = step.offer()
        if offer is not None:
            _take(plan, choice, offer, step.source)
    if plan.given and not any(s in choice.chosen for s in plan.needed):
        choice.notes.insert(0, "explicit: " + ", ".join(str(s) for s in plan.given))
    if choice.provider is not None:
        for service in choice.chosen:
            if service not in choice.logins:
                choice.logins[service] = choice.provider.login_for(
                    plan.address, choice.custom_domain, service
                )
    for service, target in plan.given.items():
        choice.certainty[service] = CERTAINTY[target.source]
    return choice


def _take(plan: _Plan, choice: _Choice, offer: Offer, source: Source) -> None:
    used = False
    for service in plan.needed:
        if service in choice.chosen or service in choice.not_offered:
            continue
        target = offer.servers.get(service)
        if target is None:
            continue
        used = True
        choice.chosen[service] = target
        choice.alternatives[service] = tuple(offer.alternatives.get(service, ()))
        choice.certainty[service] = offer.certainty.get(service, CERTAINTY[target.source])
        if service in offer.logins:
            choice.logins[service] = offer.logins[service]
    choice.not_offered |= {s for s in offer.not_offered if s not in choice.chosen}
    # the provider: of the source that gave servers, else the one the MX names (the domain's
    # mail is hosted there, so its rules apply whatever source named the servers)
    if choice.provider is None and offer.provider is not None and (used or source is Source.MX):
        choice.provider, choice.custom_domain = offer.provider, offer.custom_domain
    if (used or offer.provider is not None) and offer.note:
        choice.notes.append(offer.note)


def _result(plan: _Plan, ctx: Context, steps: Sequence[Step], choice: _Choice) -> DiscoveryResult:
    from maildiag.discovery.dnscheck import DnsFacts, observe

    targets = tuple(choice.chosen[s] for s in SERVICE_ORDER if s in choice.chosen)
    discovered = [t for t in targets if t.source is not Source.EXPLICIT]
    source: Source | None = None
    if discovered:
        source = min((t.source for t in discovered), key=SOURCE_RANK.__getitem__)
    elif plan.given:
        source = Source.EXPLICIT
    data: dict[str, Any] = {"domain": plan.address.domain, "resolver": ctx.look.dns.label}
    if plan.address.domain != ctx.domain:
        data["ascii_domain"] = ctx.domain
    for step in steps:
        if step.key:
            data[step.key] = step.data()
    data["custom_domain"] = choice.custom_domain
    data["not_offered"] = [str(s) for s in SERVICE_ORDER if s in choice.not_offered]
    facts = DnsFacts(
        address=plan.address,
        look=ctx.look,
        budget=ctx.budget,
        targets=targets,
        needed=plan.needed,
        mx=ctx.look.mx_outcome(ctx.domain) if plan.needed else None,
        known_domain=plan.home is not None,
        explicit_given=bool(plan.given),
        discovered_any=bool(discovered),
        data=data,
    )
    provider = choice.provider
    discovery = Discovery(
        source=source,
        provider=provider.id if provider is not None else None,
        note="; ".join(choice.notes),
    )
    return DiscoveryResult(
        discovery,
        targets,
        observe(facts),
        provider,
        choice.logins,
        choice.certainty,
        {s: alts for s, alts in choice.alternatives.items() if alts},
    )
