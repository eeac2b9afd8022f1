"""Discovery: which servers to check for an address, where that knowledge came from, and the
``dns`` check.

Order (SPEC "What check does"), stopping at the first source that yields servers:

1. explicit ``--smtp/--imap/--pop3``;
2. the provider database, by the address's domain (``provider``);
3. DNS SRV records, RFC 6186 / RFC 8314 (``srv``);
4. autoconfig XML published by the domain (``autoconfig``);
5. MX records matched against provider MX patterns (``mx``), else conventional names
   ``smtp./imap./pop./mail.`` + domain that resolve (``guess``).

Services given explicitly are taken as given; the others are still discovered unless ``only``
leaves them out. A service a source does not cover is filled from the next source (SRV may publish
IMAP but not POP3), except that a guess is made only when no other source found anything and a
service SRV marks as not offered (target ".") is never filled. ``discovery.source`` is
``explicit`` when every checked service was given explicitly, otherwise the highest-ranking
source among the discovered servers; each ``Target.source`` tells its own.

Time: every lookup starts at once on a thread pool; a lookup that depends on another (the A record
of an SRV target) gets what is left of ``timeout``, but at least ``min(1, timeout)`` seconds, and
nothing runs past ``timeout + min(2, timeout)``. A resolver that never answers therefore costs one
timeout in total, not one per lookup. Network trouble never raises: it becomes Problems on the
``dns`` observation (signals ``dns.*``), and discovery that finds nothing returns
``Discovery(source=None)`` with no targets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from maildiag.config import DEFAULT_PORTS
from maildiag.dnsclient import DnsError
from maildiag.models import (
    Discovery,
    Observation,
    Problem,
    Security,
    Service,
    Source,
    Status,
    Summary,
    Target,
)
from maildiag.threads import DaemonPool

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.discovery.autoconfig import AutoconfigResult
    from maildiag.discovery.providers import Provider, ProviderDb
    from maildiag.dnsclient import Dns, SrvRecord

__all__ = ["DiscoveryResult", "discover", "SERVICE_ORDER", "SOURCE_RANK"]

SERVICE_ORDER: tuple[Service, ...] = (Service.SMTP, Service.IMAP, Service.POP3)
SOURCE_RANK: dict[Source, int] = {
    Source.EXPLICIT: 0,
    Source.PROVIDER: 1,
    Source.SRV: 2,
    Source.AUTOCONFIG: 3,
    Source.MX: 4,
    Source.GUESS: 5,
}

# RFC 8314 section 5.1: implicit TLS first, STARTTLS as the fallback; RFC 6186 names.
SRV_NAMES: dict[Service, tuple[tuple[str, Security], ...]] = {
    Service.SMTP: (("_submissions._tcp", Security.SSL), ("_submission._tcp", Security.STARTTLS)),
    Service.IMAP: (("_imaps._tcp", Security.SSL), ("_imap._tcp", Security.STARTTLS)),
    Service.POP3: (("_pop3s._tcp", Security.SSL), ("_pop3._tcp", Security.STARTTLS)),
}
# Conventional names, tried in this order; RFC 8314 ports (implicit TLS).
GUESS_PREFIXES: dict[Service, tuple[str, ...]] = {
    Service.SMTP: ("smtp", "mail"),
    Service.IMAP: ("imap", "mail"),
    Service.POP3: ("pop", "mail"),
}
GUESS_SECURITY = Security.SSL


@dataclass(frozen=True)
class DiscoveryResult:
    discovery: Discovery  # source + provider id
    targets: tuple[Target, ...]  # ordered smtp, imap, pop3; each Target.source set
    dns: Observation  # the `dns` check (check="dns"), with Problems
    provider: Provider | None
    # login name per service when the source says which form the server wants
    logins: Mapping[Service, str] = field(default_factory=dict)


# --- the time budget and the lookups ---------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Resolved:
    host: str
    ips: tuple[str, ...] = ()
    error: DnsError | None = None


class _Budget:
    def __init__(self, timeout: float) -> None:
        self.timeout = max(0.05, timeout)
        self.start = time.monotonic()
        self.deadline = self.start + self.timeout
        self.hard_deadline = self.deadline + min(2.0, self.timeout)
        self._floor = min(1.0, self.timeout)

    def lifetime(self) -> float:
        """Seconds the next lookup may take (see the module docstring)."""
        now = time.monotonic()
        wanted = max(self.deadline - now, self._floor)
        return max(0.05, min(self.timeout, wanted, self.hard_deadline - now))

    def left(self) -> float:
        return max(0.0, self.hard_deadline - time.monotonic())


class _Lookups:
    """Memoised, thread-safe lookups bounded by the budget."""

    def __init__(self, dns: Dns, budget: _Budget) -> None:
        self.dns = dns
        self.budget = budget
        self._lock = threading.Lock()
        self._hosts: dict[str, Future[_Resolved]] = {}

    def resolve(self, host: str) -> _Resolved:
        """A/AAAA of ``host``; the same host is looked up once however many ask."""
        if _is_ip(host):
            return _Resolved(host, (host.strip("[]"),))
        with self._lock:
            future = self._hosts.get(host)
            owner = future is None
            if future is None:
                future = Future()
                self._hosts[host] = future
        if owner:
            try:
                result = _Resolved(host, tuple(self.dns.addresses(host, self.budget.lifetime())))
            except DnsError as exc:
                result = _Resolved(host, (), exc)
            except Exception as exc:  # noqa: BLE001 - a bug in dnspython must not end the run
                result = _Resolved(host, (), DnsError("error", host, self.dns.label, repr(exc)))
            future.set_result(result)
            return result
        try:
            return future.result(timeout=self.budget.left())
        except TimeoutError:
            return _Resolved(host, (), _timeout(host, self.dns))

    def resolve_all(self, hosts: Sequence[str]) -> dict[str, _Resolved]:
        """Several hosts at once (each on its own thread)."""
        unique = list(dict.fromkeys(hosts))
        if len(unique) <= 1:
            return {h: self.resolve(h) for h in unique}
        with DaemonPool(len(unique), "dns-host") as pool:
            futures = {h: pool.submit(self.resolve, h) for h in unique}
            return {h: f.result() for h, f in futures.items()}

    def timed_out(self) -> list[str]:
        """Host names whose lookup timed out or had not finished."""
        out = []
        for host, future in list(self._hosts.items()):
            if not future.done():
                out.append(host)
                continue
            error = future.result().error
            if error is not None and error.kind == "timeout":
                out.append(host)
        return out

    def resolved(self, host: str) -> _Resolved | None:
        """A finished lookup of ``host`` if one was made (None if never asked or still running)."""
        if _is_ip(host):
            return _Resolved(host, (host.strip("[]"),))
        future = self._hosts.get(host)
        return future.result() if future is not None and future.done() else None


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _timeout(name: str, dns: Dns) -> DnsError:
    return DnsError("timeout", name, dns.label, "no answer in time")


def _catch(fn: Callable[[], T], name: str, dns: Dns) -> T | DnsError:
    try:
        return fn()
    except DnsError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a bug in dnspython must not end the run
        return DnsError("error", name, dns.label, repr(exc))


# --- sources ---------------------------------------------------------------------------------


@dataclass
class _SrvOutcome:
    name: str
    security: Security
    records: list[SrvRecord] | DnsError
    target: _Resolved | None = None  # resolution of the best usable target


def _srv_task(look: _Lookups, name: str, security: Security) -> _SrvOutcome:
    records = _catch(lambda: look.dns.srv(name, look.budget.lifetime()), name, look.dns)
    outcome = _SrvOutcome(name, security, records)
    if isinstance(records, list):
        usable = [r for r in records if r.target and r.port]
        if usable:
            outcome.target = look.resolve(usable[0].target)
    return outcome


@dataclass
class _AutoconfigOutcome:
    url: str
    result: AutoconfigResult | None = None
    error: str = ""
    hosts: dict[str, _Resolved] = field(default_factory=dict)


def _autoconfig_task(
    look: _Lookups,
    address: Address,
    host: str,
    path: str,
    ca_file: str | None,
    port: int | None,
) -> _AutoconfigOutcome:
    from maildiag.discovery import autoconfig

    url = autoconfig.location_url(host, path, port)
    outcome = _AutoconfigOutcome(url)
    resolved = look.resolve(host)
    if not resolved.ips:
        kind = resolved.error.kind if resolved.error else "no_answer"
        outcome.error = f"dns: {host}: {kind}"
        return outcome
    try:
        context = autoconfig.make_context(ca_file)
        body = autoconfig.fetch(
            host,
            path,
            ips=list(resolved.ips),
            context=context,
            deadline=look.budget.deadline + (look.budget.hard_deadline - look.budget.deadline) / 2,
            timeout=look.budget.lifetime(),
            port=port,
        )
        outcome.result = autoconfig.parse(body, address, url)
    except autoconfig.AutoconfigError as exc:
        outcome.error = str(exc)
        return outcome
    except (OSError, ValueError) as exc:  # ca_file unreadable, odd socket errors
        outcome.error = f"error: {exc.__class__.__name__}: {exc}"
        return outcome
    firsts = [specs[0].host for specs in outcome.result.servers.values()]
    outcome.hosts = look.resolve_all(firsts)
    return outcome


@dataclass
class _MxOutcome:
    records: list[tuple[int, str]] | DnsError
    provider: Provider | None = None
    matched_host: str = ""
    hosts: dict[str, _Resolved] = field(default_factory=dict)


def _mx_task(
    look: _Lookups, domain: str, db: ProviderDb, needed: Sequence[Service], want_provider: bool
) -> _MxOutcome:
    records = _catch(lambda: look.dns.mx(domain, look.budget.lifetime()), domain, look.dns)
    outcome = _MxOutcome(records)
    if not want_provider or not isinstance(records, list):
        return outcome
    for _, host in records:
        provider = db.by_mx(host) if host else None
        if provider is not None:
            outcome.provider, outcome.matched_host = provider, host
            servers = provider.servers_for(custom_domain=True)
            firsts = [servers[s][0].host for s in needed if s in servers]
            outcome.hosts = look.resolve_all(firsts)
            break
    return outcome


# --- discover --------------------------------------------------------------------------------


def discover(
    address: Address,
    *,
    explicit: Sequence[Target] = (),
    only: frozenset[Service] = frozenset(Service),
    dns: Dns,
    timeout: float,
    ca_file: str | None = None,
    autoconfig_port: int | None = None,
    providers: ProviderDb | None = None,
) -> DiscoveryResult:
    """Find the servers for ``address``; never raises for network trouble (see module doc).

    ``providers``: the provider database (default: the built-in one);
    ``autoconfig_port``: fetch autoconfig over this port instead of 443 (tests).
    """
    from maildiag.discovery.providers import load_providers

    db = providers if providers is not None else load_providers()
    budget = _Budget(timeout)
    look = _Lookups(dns, budget)
    wanted = [s for s in SERVICE_ORDER if s in only]
    given: dict[Service, Target] = {}
    for target in explicit:
        if target.service in only and target.service not in given:
            given[target.service] = target
    needed = [s for s in wanted if s not in given]
    domain = address.ascii_domain
    home = db.by_domain(address.domain)
    all_explicit = bool(given) and not needed

    # daemon workers: a lookup or fetch still running at the deadline is abandoned, and it does
    # not keep the process alive after the report (maildiag.threads)
    pool = DaemonPool(24, "discover")
    futures: dict[str, Future[Any]] = {}
    try:
        for service, target in given.items():
            futures[f"explicit:{service}"] = pool.submit(look.resolve, target.host)
        if not all_explicit:
            futures["mx"] = pool.submit(
                _mx_task, look, domain, db, needed, home is None and bool(needed)
            )
        if needed and home is not None:
            for service in needed:
                specs = home.servers.get(service)
                if specs:
                    futures[f"provider:{service}"] = pool.submit(look.resolve, specs[0].host)
        elif needed:
            from maildiag.discovery.autoconfig import autoconfig_locations

            for service in needed:
                for prefix, security in SRV_NAMES[service]:
                    name = f"{prefix}.{domain}"
                    futures[f"srv:{name}"] = pool.submit(_srv_task, look, name, security)
            for i, (host, path) in enumerate(autoconfig_locations(address)):
                futures[f"autoconfig:{i}"] = pool.submit(
                    _autoconfig_task, look, address, host, path, ca_file, autoconfig_port
                )
            for name in _guess_names(needed, domain):
                futures[f"guess:{name}"] = pool.submit(look.resolve, name)
        wait(list(futures.values()), timeout=budget.left())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

    def result(key: str) -> Any:
        future = futures.get(key)
        if future is None or not future.done() or future.cancelled():
            return None
        return future.result()

    chosen: dict[Service, Target] = dict(given)
    logins: dict[Service, str] = {}
    notes: list[str] = []
    data: dict[str, Any] = {"domain": address.domain, "resolver": dns.label}
    if address.domain != domain:
        data["ascii_domain"] = domain
    provider: Provider | None = home
    custom_domain = False
    not_offered: list[Service] = []

    if needed and home is not None:
        for service in needed:
            specs = home.servers.get(service)
            if specs:
                chosen[service] = _target(
                    service, specs[0].host, specs[0].port, specs[0].security, Source.PROVIDER
                )
                logins[service] = home.login_for(address, False, service)
            else:
                not_offered.append(service)
        notes.append(f"provider database: {home.id}")
    elif needed:
        srv_data, not_offered = _apply_srv(needed, domain, result, chosen)
        data["srv"] = srv_data
        if srv_data.get("used"):
            notes.append("SRV " + ", ".join(srv_data["used"]))
        ac_data = _apply_autoconfig(needed, result, chosen, logins, not_offered)
        data["autoconfig"] = ac_data
        if ac_data.get("used"):
            notes.append(f"autoconfig {ac_data['used']}")
        mx_outcome: _MxOutcome | None = result("mx")
        if mx_outcome is not None and mx_outcome.provider is not None:
            mx_provider = mx_outcome.provider
            provider, custom_domain = mx_provider, True
            notes.append(f"MX {mx_outcome.matched_host} is {mx_provider.id}")
            servers = mx_provider.servers_for(custom_domain=True)
            for service in needed:
                if service in chosen or service in not_offered or service not in servers:
                    continue
                spec = servers[service][0]
                chosen[service] = _target(service, spec.host, spec.port, spec.security, Source.MX)
                logins[service] = mx_provider.login_for(address, True, service)
        if not any(s in chosen for s in needed):
            guessed = _apply_guess(needed, domain, look, chosen, not_offered)
            if guessed:
                notes.append("guess: " + ", ".join(guessed))

    targets = tuple(chosen[s] for s in SERVICE_ORDER if s in chosen)
    discovered = [t for t in targets if t.source is not Source.EXPLICIT]
    if discovered:
        source: Source | None = min((t.source for t in discovered), key=SOURCE_RANK.__getitem__)
    elif given:
        source = Source.EXPLICIT
        notes.insert(0, "explicit: " + ", ".join(str(s) for s in given))
    else:
        source = None
    for service in chosen:
        if service not in logins and provider is not None:
            logins[service] = provider.login_for(address, custom_domain, service)
    data["custom_domain"] = custom_domain
    data["not_offered"] = [str(s) for s in not_offered]

    observation = _dns_observation(
        address=address,
        dns=dns,
        look=look,
        budget=budget,
        targets=targets,
        needed=needed,
        all_explicit=all_explicit,
        mx=result("mx") if not all_explicit else None,
        mx_asked=not all_explicit,
        discovered_any=bool(discovered),
        data=data,
        known_domain=home is not None,
        explicit_given=bool(given),
    )
    discovery = Discovery(
        source=source,
        provider=provider.id if provider is not None else None,
        note="; ".join(notes),
    )
    return DiscoveryResult(discovery, targets, observation, provider, logins)


def _target(service: Service, host: str, port: int, security: Security, source: Source) -> Target:
    return Target(service=service, host=host, port=port, security=security, source=source)


def _guess_names(needed: Sequence[Service], domain: str) -> list[str]:
    names = [f"{p}.{domain}" for s in needed for p in GUESS_PREFIXES[s]]
    return list(dict.fromkeys(names))


def _apply_srv(
    needed: Sequence[Service],
    domain: str,
    result: Callable[[str], Any],
    chosen: dict[Service, Target],
) -> tuple[dict[str, Any], list[Service]]:
    """Pick one SRV target per service: implicit TLS first (RFC 8314 5.1), then by priority and
    weight (RFC 2782). A service whose records all point at "." is not offered (RFC 6186 3.4)."""
    data: dict[str, Any] = {"records": {}, "used": []}
    not_offered: list[Service] = []
    for service in needed:
        states: list[str] = []
        for prefix, _ in SRV_NAMES[service]:
            name = f"{prefix}.{domain}"
            outcome: _SrvOutcome | None = result(f"srv:{name}")
            if outcome is None or isinstance(outcome.records, DnsError):
                kind = "timeout" if outcome is None else outcome.records.kind  # type: ignore[union-attr]
                data["records"][name] = kind
                states.append("missing" if kind in ("nxdomain", "no_answer") else "failed")
                continue
            data["records"][name] = [
                {
                    "priority": r.priority,
                    "weight": r.weight,
                    "port": r.port,
                    "target": r.target or ".",
                }
                for r in outcome.records
            ]
            usable = [r for r in outcome.records if r.target and r.port]
            if not usable:
                states.append("dot")
                continue
            states.append("usable")
            if service not in chosen:
                best = usable[0]
                chosen[service] = _target(
                    service, best.target, best.port, outcome.security, Source.SRV
                )
                data["used"].append(name)
                if len(usable) > 1:
                    data.setdefault("alternatives", {})[name] = [
                        f"{r.target}:{r.port}" for r in usable[1:]
                    ]
        if "usable" not in states and "dot" in states and "failed" not in states:
            not_offered.append(service)
    return data, not_offered


def _apply_autoconfig(
    needed: Sequence[Service],
    result: Callable[[str], Any],
    chosen: dict[Service, Target],
    logins: dict[Service, str],
    not_offered: Sequence[Service],
) -> dict[str, Any]:
    data: dict[str, Any] = {"tried": {}}
    for i in range(2):
        outcome: _AutoconfigOutcome | None = result(f"autoconfig:{i}")
        if outcome is None:
            continue
        if outcome.result is None:
            data["tried"][outcome.url] = outcome.error or "no result"
            continue
        data["tried"][outcome.url] = "ok"
        if outcome.result.skipped:
            data["skipped"] = list(outcome.result.skipped)
        used = False
        for service in needed:
            specs = outcome.result.servers.get(service)
            if not specs or service in chosen or service in not_offered:
                continue
            spec = specs[0]
            chosen[service] = _target(
                service, spec.host, spec.port, spec.security, Source.AUTOCONFIG
            )
            if spec.login:
                logins[service] = spec.login
            used = True
        if used:
            data["used"] = outcome.url
            data["alternatives"] = {
                str(s): [f"{x.host}:{x.port}/{x.security}" for x in specs[1:]]
                for s, specs in outcome.result.servers.items()
                if len(specs) > 1
            }
        break  # the first file that parsed is the domain's answer
    return data


def _apply_guess(
    needed: Sequence[Service],
    domain: str,
    look: _Lookups,
    chosen: dict[Service, Target],
    not_offered: Sequence[Service],
) -> list[str]:
    used: list[str] = []
    for service in needed:
        if service in chosen or service in not_offered:
            continue
        for prefix in GUESS_PREFIXES[service]:
            name = f"{prefix}.{domain}"
            resolved = look.resolved(name)
            if resolved is not None and resolved.ips:
                port = DEFAULT_PORTS[(service, GUESS_SECURITY)]
                chosen[service] = _target(service, name, port, GUESS_SECURITY, Source.GUESS)
                used.append(name)
                break
    return list(dict.fromkeys(used))


# --- the `dns` check -------------------------------------------------------------------------


def _dns_observation(
    *,
    address: Address,
    dns: Dns,
    look: _Lookups,
    budget: _Budget,
    targets: Sequence[Target],
    needed: Sequence[Service],
    all_explicit: bool,
    mx: _MxOutcome | None,
    mx_asked: bool,
    discovered_any: bool,
    data: dict[str, Any],
    known_domain: bool = False,
    explicit_given: bool = False,
) -> Observation:
    problems: list[Problem] = []
    timeouts: list[str] = []
    facts: list[Summary] = []  # what the summary lists (rules/ui-report.yaml summary.dns.*)
    domain = address.domain

    def fact(key: str, **params: Any) -> None:
        facts.append(Summary(key, params))

    def dns_failure(err: DnsError, extra: Mapping[str, Any] | None = None) -> None:
        if err.kind == "timeout":
            timeouts.append(err.name)
        else:
            problems.append(
                Problem(
                    "dns.error",
                    err.detail or err.kind,
                    {"name": err.name, "resolver": dns.label, **(extra or {})},
                )
            )

    if mx_asked:
        records = mx.records if mx is not None else _timeout(address.ascii_domain, dns)
        if isinstance(records, DnsError):
            if records.kind == "nxdomain" and known_domain:
                # yandex.ru, gmail.com ... exist: a resolver that denies them is broken or
                # filtered (captive portal, no network behind it), not the user's typo
                problems.append(
                    Problem(
                        "dns.resolver_broken", "NXDOMAIN", {"domain": domain, "resolver": dns.label}
                    )
                )
                fact(
                    "dns.resolver_denies",
                    resolver=dns.label,
                    domain=domain,
                )
            elif records.kind == "nxdomain":
                problems.append(Problem("dns.nxdomain", "NXDOMAIN", {"domain": domain}))
                fact("dns.nxdomain", domain=domain)
            elif records.kind == "no_answer":
                problems.append(Problem("dns.no_mx", "", {"domain": domain, "null_mx": False}))
                fact("dns.no_mx", domain=domain)
            else:
                dns_failure(records)
            data["mx"] = records.kind
        else:
            hosts = [h for _, h in records if h]
            data["mx"] = [{"preference": p, "host": h or "."} for p, h in records]
            if not hosts:  # RFC 7505 null MX: the domain accepts no mail
                problems.append(
                    Problem("dns.no_mx", "null MX", {"domain": domain, "null_mx": True})
                )
                fact("dns.null_mx", domain=domain)
            else:
                listed = f"{', '.join(hosts[:3])}{' ...' if len(hosts) > 3 else ''}"
                fact("dns.mx", hosts=listed)

    if needed and not discovered_any:
        # the lookups discovery depended on: their timeouts explain why nothing was found
        timeouts.extend(look.timed_out())
        for key, value in data.get("srv", {}).get("records", {}).items():
            if value == "timeout":
                timeouts.append(key)
    nx = any(p.signal == "dns.nxdomain" for p in problems)
    if needed and not discovered_any and not nx and not timeouts:
        problems.append(
            Problem("dns.no_servers", "", {"domain": domain, "services": [str(s) for s in needed]})
        )
        fact("dns.no_servers")
    if explicit_given and (problems or timeouts):
        # The user named servers: with them the dns check establishes only that their names
        # resolve (SPEC). A domain that does not exist, has no MX or publishes nothing only
        # means the other services were not found; it is kept as data, not as a failure.
        data["discovery_problems"] = [p.signal for p in problems] + (
            ["dns.timeout"] if timeouts else []
        )
        problems.clear()
        timeouts.clear()

    resolved_data: dict[str, Any] = {}
    unresolved = 0
    for target in targets:
        result = look.resolved(target.host) or _Resolved(
            target.host, (), _timeout(target.host, dns)
        )
        if result.ips:
            resolved_data[target.host] = list(result.ips)
            continue
        unresolved += 1
        err = result.error or DnsError("no_answer", target.host, dns.label)
        resolved_data[target.host] = err.kind
        params = {
            "host": target.host,
            "service": str(target.service),
            "port": target.port,
            "security": str(target.security),
        }
        if (
            known_domain
            and err.kind == "nxdomain"
            and any(p.signal == "dns.resolver_broken" for p in problems)
        ):
            continue  # the same broken resolver, already said once
        if err.kind in ("nxdomain", "no_answer"):
            problems.append(Problem("dns.host_unresolved", err.detail or err.kind, params))
        else:
            dns_failure(err, params)
    data["addresses"] = resolved_data
    if targets:
        ok = len(targets) - unresolved
        fact(
            "dns.resolved",
            resolved=ok,
            servers=len(targets),
        )

    if timeouts:
        names = list(dict.fromkeys(timeouts))
        problems.insert(
            0,
            Problem(
                "dns.timeout",
                f"no answer from {dns.label} within {budget.timeout:g}s",
                {
                    "name": names[0],
                    "names": names,
                    "resolver": dns.label,
                    "timeout": budget.timeout,
                },
            ),
        )
        facts.insert(0, Summary("dns.resolver_silent", {"resolver": dns.label}))

    worst = Status.OK
    for problem in problems:
        if problem.signal == "dns.no_mx":
            worst = Status.WARN if worst is Status.OK else worst
        else:
            worst = Status.FAIL
    summary = Summary("dns.domain", {"domain": domain, "facts": facts})
    if all_explicit:
        summary = Summary("dns.explicit", {"facts": facts})
    elapsed = int((time.monotonic() - budget.start) * 1000)
    return Observation(
        check="dns",
        status=worst,
        summary=summary,
        data=data,
        problems=tuple(problems),
        duration_ms=elapsed,
    )
