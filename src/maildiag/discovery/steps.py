"""The sources of discovery, one class each, in the order their answers rank.

Every step starts its network work at once on the shared pool (``start``), knows whether its
answer is final (``settled``), and then gives an ``Offer``: the server it proposes for each
service, the login the source names, the services it says are not offered, and facts for the
``dns`` check's data (``data``). ``discover()`` takes, per service, the offer of the first step
in this order that has one:

    ProviderStep      the provider database (hand-written entries and the shipped ISPDB)
    SrvStep           DNS SRV, RFC 6186 / RFC 8314
    AutoconfigStep    the domain's own autoconfig file
    IspdbStep         Thunderbird's ISPDB online (newer than the shipped copy)
    AutodiscoverStep  Microsoft Autodiscover: the domain's POX service, Exchange Online's JSON
    MxStep            MX records matched against the provider database
    GuessStep         conventional names and the MX hosts, probed (only when nothing else
                      found anything)

A step never raises for network trouble: what went wrong is a fact in its ``data``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maildiag.dnsclient import DnsError
from maildiag.models import CERTAINTY, Security, Service, Source, Target
from maildiag.threads import DaemonPool

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.discovery.autoconfig import AutoconfigResult
    from maildiag.discovery.lookups import Budget, Lookups, Resolved
    from maildiag.discovery.providerdb import Provider, ProviderDb

# RFC 8314 section 5.1: implicit TLS first, STARTTLS as the fallback; RFC 6186 names.
SRV_NAMES: dict[Service, tuple[tuple[str, Security], ...]] = {
    Service.SMTP: (("_submissions._tcp", Security.SSL), ("_submission._tcp", Security.STARTTLS)),
    Service.IMAP: (("_imaps._tcp", Security.SSL), ("_imap._tcp", Security.STARTTLS)),
    Service.POP3: (("_pop3s._tcp", Security.SSL), ("_pop3._tcp", Security.STARTTLS)),
}
EXCHANGE_ONLINE = ("microsoft365", "ispdb:office365.com")  # provider ids, preferred first


@dataclass
class Context:
    """What every step needs; one per ``discover()`` call."""

    address: Address
    needed: tuple[Service, ...]
    look: Lookups
    budget: Budget
    db: ProviderDb
    pool: DaemonPool
    ca_file: str | None = None
    port_map: Mapping[int, int] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.address.ascii_domain

    @property
    def https_port(self) -> int:
        return self.port_map.get(443, 443)


@dataclass
class Offer:
    """A step's answer: at most one server per service, with what the source says about it."""

    servers: dict[Service, Target] = field(default_factory=dict)
    # the source's other servers per service, in its order: what ``check`` tries when the first
    # one fails (the provider's other entries, more SRV records, the document's other servers)
    alternatives: dict[Service, list[Target]] = field(default_factory=dict)
    logins: dict[Service, str] = field(default_factory=dict)
    certainty: dict[Service, str] = field(default_factory=dict)
    not_offered: frozenset[Service] = frozenset()
    provider: Provider | None = None
    custom_domain: bool = False
    note: str = ""


class Step:
    source: Source
    key: str = ""  # its entry in the dns check's data ("" when it has none)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.futures: list[Future[Any]] = []

    def start(self) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future = self.ctx.pool.submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future

    def settled(self) -> bool:
        return all(f.done() for f in self.futures)

    def offer(self) -> Offer | None:
        raise NotImplementedError

    def data(self) -> dict[str, Any]:
        return {}

    def result(self, index: int) -> Any:
        """The outcome of the ``index``-th task, None while it runs (or if it was cancelled)."""
        future = self.futures[index] if index < len(self.futures) else None
        if future is None or not future.done() or future.cancelled():
            return None
        return future.result()

    def target(self, service: Service, host: str, port: int, security: Security) -> Target:
        return Target(service=service, host=host, port=port, security=security, source=self.source)

    def targets(self, service: Service, specs: Sequence[Any]) -> list[Target]:
        """Targets of server specs (``ServerSpec``-like: host, port, security)."""
        return [self.target(service, s.host, s.port, s.security) for s in specs]


# --- the provider database -------------------------------------------------------------------


class ProviderStep(Step):
    """The address's domain is in the provider database: certain, and no network needed (the
    server names are still resolved, for the ``dns`` check)."""

    source = Source.PROVIDER

    def __init__(self, ctx: Context, provider: Provider) -> None:
        super().__init__(ctx)
        self.provider = provider

    def start(self) -> None:
        for service in self.ctx.needed:
            specs = self.provider.servers.get(service)
            if specs:
                self.submit(self.ctx.look.resolve, specs[0].host)

    def settled(self) -> bool:
        return True  # the answer does not wait for DNS

    def offer(self) -> Offer:
        offer = Offer(provider=self.provider, note=f"provider database: {self.provider.id}")
        missing = set()
        for service in self.ctx.needed:
            specs = self.provider.servers.get(service)
            if not specs:
                missing.add(service)
                continue
            spec = specs[0]
            offer.servers[service] = self.target(service, spec.host, spec.port, spec.security)
            offer.alternatives[service] = self.targets(service, specs[1:])
            offer.logins[service] = self.provider.login_for(self.ctx.address, False, service)
            offer.certainty[service] = CERTAINTY[self.source]
        offer.not_offered = frozenset(missing)
        return offer


# --- SRV -------------------------------------------------------------------------------------


@dataclass
class _SrvOutcome:
    name: str
    security: Security
    records: list[Any] | DnsError
    target: Resolved | None = None  # resolution of the best usable target


class SrvStep(Step):
    """RFC 6186 SRV records: implicit TLS first (RFC 8314 5.1), then by priority and weight
    (RFC 2782). A service whose records all point at "." is not offered (RFC 6186 3.4)."""

    source = Source.SRV
    key = "srv"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.names = [
            (service, f"{prefix}.{ctx.domain}", security)
            for service in ctx.needed
            for prefix, security in SRV_NAMES[service]
        ]

    def start(self) -> None:
        for _, name, security in self.names:
            self.submit(self._lookup, name, security)

    def _lookup(self, name: str, security: Security) -> _SrvOutcome:
        outcome = _SrvOutcome(name, security, self.ctx.look.srv(name))
        if isinstance(outcome.records, list):
            usable = [r for r in outcome.records if r.target and r.port]
            if usable:
                outcome.target = self.ctx.look.resolve(usable[0].target)
        return outcome

    def _outcomes(self) -> list[tuple[Service, str, _SrvOutcome | None]]:
        return [(svc, name, self.result(i)) for i, (svc, name, _) in enumerate(self.names)]

    def offer(self) -> Offer:
        offer = Offer()
        states: dict[Service, list[str]] = {}
        for service, _, outcome in self._outcomes():
            state = _srv_state(outcome)
            states.setdefault(service, []).append(state)
            if state != "usable" or service in offer.servers or outcome is None:
                continue
            best = _usable(outcome)[0]
            offer.servers[service] = self.target(service, best.target, best.port, outcome.security)
            offer.certainty[service] = CERTAINTY[self.source]
        for service, _, outcome in self._outcomes():  # the other records, implicit TLS first
            if outcome is None or service not in offer.servers:
                continue
            chosen = offer.servers[service]
            offer.alternatives.setdefault(service, []).extend(
                t
                for r in _usable(outcome)
                if (t := self.target(service, r.target, r.port, outcome.security)) != chosen
            )
        offer.not_offered = frozenset(
            s for s, st in states.items() if "dot" in st and not {"usable", "failed"} & set(st)
        )
        if offer.servers:
            offer.note = "SRV " + ", ".join(self.data()["used"])
        return offer

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"records": {}, "used": []}
        chosen: set[Service] = set()
        for service, name, outcome in self._outcomes():
            if outcome is None or isinstance(outcome.records, DnsError):
                data["records"][name] = "timeout" if outcome is None else outcome.records.kind  # type: ignore[union-attr]
                continue
            data["records"][name] = [
                {"priority": r.priority, "weight": r.weight, "port": r.port, "target": r.target}
                for r in outcome.records
            ]
            for record in data["records"][name]:
                record["target"] = record["target"] or "."
            usable = _usable(outcome)
            if usable and service not in chosen:
                chosen.add(service)
                data["used"].append(name)
                if len(usable) > 1:
                    data.setdefault("alternatives", {})[name] = [
                        f"{r.target}:{r.port}" for r in usable[1:]
                    ]
        return data

    def found_any(self) -> bool:
        """Whether some SRV record names a usable server (waits for the lookups)."""
        return any(
            isinstance(r := self.ctx.look.srv(name), list) and any(x.target and x.port for x in r)
            for _, name, _ in self.names
        )


def _usable(outcome: _SrvOutcome) -> list[Any]:
    records = outcome.records if isinstance(outcome.records, list) else []
    return [r for r in records if r.target and r.port]


def _srv_state(outcome: _SrvOutcome | None) -> str:
    if outcome is None:
        return "failed"
    if isinstance(outcome.records, DnsError):
        return "missing" if outcome.records.kind in ("nxdomain", "no_answer") else "failed"
    return "usable" if _usable(outcome) else "dot"


# --- documents over HTTPS: autoconfig, the ISPDB online --------------------------------------


@dataclass
class _Fetched:
    url: str
    result: AutoconfigResult | None = None
    error: str = ""


def fetch_document(
    ctx: Context,
    host: str,
    path: str,
    parse: Callable[[bytes, str], AutoconfigResult],
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> _Fetched:
    """Resolve ``host`` (our resolver), fetch https://host/path within the budget, parse it;
    then resolve the first server of each service (for the ``dns`` check)."""
    from maildiag.discovery import https
    from maildiag.discovery.autoconfig import AutoconfigError

    fetched = _Fetched(https.url(host, path, ctx.https_port))
    raw = _fetch(ctx, host, path, fetched, body=body, headers=headers)
    if raw is None:
        return fetched
    try:
        fetched.result = parse(raw, fetched.url)
    except AutoconfigError as exc:
        fetched.error = str(exc)
        return fetched
    ctx.look.resolve_all([specs[0].host for specs in fetched.result.servers.values()])
    return fetched


def _fetch(
    ctx: Context,
    host: str,
    path: str,
    fetched: _Fetched,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes | None:
    from maildiag.discovery import https

    resolved = ctx.look.resolve(host)
    if not resolved.ips:
        kind = resolved.error.kind if resolved.error else "no_answer"
        fetched.error = f"dns: {host}: {kind}"
        return None
    try:
        return https.fetch(
            host,
            path,
            ips=list(resolved.ips),
            context=https.make_context(ctx.ca_file),
            deadline=ctx.budget.net_deadline,
            timeout=ctx.budget.lifetime(),
            port=ctx.https_port,
            body=body,
            headers=headers,
        )
    except https.HttpsError as exc:
        fetched.error = str(exc)
    except (OSError, ValueError) as exc:  # ca_file unreadable, odd socket errors
        fetched.error = f"error: {exc.__class__.__name__}: {exc}"
    return None


def offer_document(step: Step, fetched: _Fetched | None) -> Offer | None:
    """The servers of a fetched document (autoconfig format or Autodiscover POX)."""
    if fetched is None or fetched.result is None:
        return None
    offer = Offer(note=f"{step.source} {fetched.url}")
    for service in step.ctx.needed:
        specs = fetched.result.servers.get(service)
        if not specs:
            continue
        spec = specs[0]
        offer.servers[service] = step.target(service, spec.host, spec.port, spec.security)
        offer.alternatives[service] = step.targets(service, specs[1:])
        offer.certainty[service] = CERTAINTY[step.source]
        if spec.login:
            offer.logins[service] = spec.login
    return offer if offer.servers else None


def document_data(fetched: _Fetched | None) -> dict[str, Any]:
    if fetched is None:
        return {"result": "timeout"}
    if fetched.result is None:
        return {"url": fetched.url, "result": fetched.error or "no result"}
    data: dict[str, Any] = {"url": fetched.url, "result": "ok"}
    if fetched.result.skipped:
        data["skipped"] = list(fetched.result.skipped)
    alternatives = {
        str(s): [f"{x.host}:{x.port}/{x.security}" for x in specs[1:]]
        for s, specs in fetched.result.servers.items()
        if len(specs) > 1
    }
    if alternatives:
        data["alternatives"] = alternatives
    return data


class AutoconfigStep(Step):
    """The domain's own autoconfig file: autoconfig.<domain>, then <domain>/.well-known."""

    source = Source.AUTOCONFIG
    key = "autoconfig"

    def start(self) -> None:
        from maildiag.discovery.autoconfig import autoconfig_locations

        for host, path in autoconfig_locations(self.ctx.address):
            self.submit(fetch_document, self.ctx, host, path, self._parse)

    def _parse(self, raw: bytes, url: str) -> AutoconfigResult:
        from maildiag.discovery.autoconfig import parse

        return parse(raw, self.ctx.address, url)

    def _first(self) -> _Fetched | None:
        """The first location, in order, whose file parsed (None while an earlier one runs)."""
        for index in range(len(self.futures)):
            fetched: _Fetched | None = self.result(index)
            if fetched is None:
                return None
            if fetched.result is not None:
                return fetched
        return None

    def offer(self) -> Offer | None:
        return offer_document(self, self._first())

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"tried": {}}
        for index in range(len(self.futures)):
            fetched: _Fetched | None = self.result(index)
            if fetched is None:
                continue
            data["tried"][fetched.url] = "ok" if fetched.result else fetched.error or "no result"
        first = self._first()
        if first is not None and self.offer() is not None:
            data["used"] = first.url
            data.update({k: v for k, v in document_data(first).items() if k != "url"})
            data.pop("result", None)
        return data


class IspdbStep(Step):
    """Thunderbird's ISPDB online: https://autoconfig.thunderbird.net/v1.1/<domain>."""

    source = Source.ISPDB
    key = "ispdb"

    def start(self) -> None:
        from maildiag.discovery.ispdb import ONLINE_HOST, online_path

        self.submit(
            fetch_document, self.ctx, ONLINE_HOST, online_path(self.ctx.domain), self._parse
        )

    def _parse(self, raw: bytes, url: str) -> AutoconfigResult:
        from maildiag.discovery.autoconfig import parse

        return parse(raw, self.ctx.address, url)

    def offer(self) -> Offer | None:
        return offer_document(self, self.result(0))

    def data(self) -> dict[str, Any]:
        return document_data(self.result(0))


# --- Microsoft Autodiscover ------------------------------------------------------------------


class AutodiscoverStep(Step):
    """The domain's POX Autodiscover; Exchange Online's JSON answer for Exchange-like domains
    (``autodiscover.<domain>`` exists, or the MX is Microsoft's)."""

    source = Source.AUTODISCOVER
    key = "autodiscover"

    def start(self) -> None:
        from maildiag.discovery import autodiscover as ad

        self.submit(
            fetch_document,
            self.ctx,
            ad.pox_host(self.ctx.address),
            ad.POX_PATH,
            self._parse_pox,
            body=ad.pox_request(self.ctx.address),
            headers=ad.POX_HEADERS,
        )
        self.submit(self._exchange_online)

    def _parse_pox(self, raw: bytes, url: str) -> AutoconfigResult:
        from maildiag.discovery.autodiscover import parse_pox

        return parse_pox(raw, self.ctx.address, url)

    def _exchange_like(self) -> bool:
        from maildiag.discovery.autodiscover import pox_host

        if self.ctx.look.resolve(pox_host(self.ctx.address)).ips:
            return True
        records = self.ctx.look.mx(self.ctx.domain)
        online = self._provider()
        return (
            online is not None
            and isinstance(records, list)
            and any(online.matches_mx(host) for _, host in records if host)
        )

    def _exchange_online(self) -> _Fetched | None:
        from maildiag.discovery import autodiscover as ad
        from maildiag.discovery.autoconfig import AutoconfigError

        if not self._exchange_like():
            return None
        fetched = _Fetched("")
        raw = _fetch(
            self.ctx, ad.JSON_HOST, ad.json_path(self.ctx.address), fetched, headers=ad.JSON_HEADERS
        )
        fetched.url = f"https://{ad.JSON_HOST}{ad.json_path(self.ctx.address)}"
        if raw is None:
            return fetched
        try:
            found = ad.parse_json(raw)
        except AutoconfigError as exc:
            fetched.error = str(exc)
            return fetched
        fetched.error = "" if ad.is_exchange_online(found) else f"not Exchange Online: {found}"
        return fetched

    def _provider(self) -> Provider | None:
        return next((p for p in map(self.ctx.db.get, EXCHANGE_ONLINE) if p is not None), None)

    def offer(self) -> Offer | None:
        pox = offer_document(self, self.result(0))
        if pox is not None:
            return pox
        online: _Fetched | None = self.result(1)
        provider = self._provider()
        if online is None or online.error or not online.url or provider is None:
            return None
        offer = Offer(provider=provider, custom_domain=True, note=f"autodiscover {online.url}")
        servers = provider.servers_for(custom_domain=True)
        for service in self.ctx.needed:
            if servers.get(service):
                spec = servers[service][0]
                offer.servers[service] = self.target(service, spec.host, spec.port, spec.security)
                offer.alternatives[service] = self.targets(service, servers[service][1:])
                offer.logins[service] = provider.login_for(self.ctx.address, True, service)
                offer.certainty[service] = CERTAINTY[self.source]
        return offer if offer.servers else None

    def data(self) -> dict[str, Any]:
        data = {"pox": document_data(self.result(0))}
        online: _Fetched | None = self.result(1)
        if online is not None:
            data["exchange_online"] = {"url": online.url, "result": online.error or "ok"}
        return data


# --- MX → provider ---------------------------------------------------------------------------


@dataclass
class _MxMatch:
    provider: Provider
    host: str


class MxStep(Step):
    """A custom domain hosted at a known provider, told by its MX records. The match needs only
    the MX lookup (the provider database is local); the task resolves the provider's servers for
    the ``dns`` check."""

    source = Source.MX

    def start(self) -> None:
        self.submit(self._resolve)

    def _resolve(self) -> None:
        self.ctx.look.mx(self.ctx.domain)  # waits for the shared lookup
        match = self.matched()
        if match is not None:
            servers = match.provider.servers_for(custom_domain=True)
            self.ctx.look.resolve_all([servers[s][0].host for s in self.ctx.needed if s in servers])

    def settled(self) -> bool:
        return self.ctx.look.record_done("MX", self.ctx.domain)

    def matched(self) -> _MxMatch | None:
        """The provider the MX records name, once they are known (never waits)."""
        records = self.ctx.look.mx_outcome(self.ctx.domain)
        if not isinstance(records, list):
            return None
        for _, host in records:
            provider = self.ctx.db.by_mx(host) if host else None
            if provider is not None:
                return _MxMatch(provider.for_domain(self.ctx.domain), host)
        return None

    def offer(self) -> Offer | None:
        match = self.matched()
        if match is None:
            return None
        provider = match.provider
        offer = Offer(
            provider=provider, custom_domain=True, note=f"MX {match.host} is {provider.id}"
        )
        servers = provider.servers_for(custom_domain=True)
        for service in self.ctx.needed:
            if servers.get(service):
                spec = servers[service][0]
                offer.servers[service] = self.target(service, spec.host, spec.port, spec.security)
                offer.alternatives[service] = self.targets(service, servers[service][1:])
                offer.logins[service] = provider.login_for(self.ctx.address, True, service)
                offer.certainty[service] = CERTAINTY[self.source]
        return offer


# --- guesses ---------------------------------------------------------------------------------


@dataclass
class _Guessed:
    chosen: dict[Service, tuple[Any, str]] = field(default_factory=dict)  # (Candidate, certainty)
    probes: dict[str, str] = field(default_factory=dict)
    skipped: str = ""


class GuessStep(Step):
    """Conventional names and the MX hosts, probed at once (``maildiag.discovery.guess``).
    Waits for SRV and MX (DNS, quick): when they name servers, nothing is probed."""

    source = Source.GUESS
    key = "guess"

    def __init__(self, ctx: Context, srv: SrvStep | None, mx: MxStep | None) -> None:
        super().__init__(ctx)
        self.srv, self.mx = srv, mx

    def start(self) -> None:
        from maildiag.discovery import guess

        # the names that need no MX are looked up at once, with everything else
        for host in dict.fromkeys(
            c.host for c in guess.candidates(self.ctx.needed, self.ctx.domain, ())
        ):
            self.ctx.pool.submit(self.ctx.look.resolve, host)
        self.submit(self._guess)

    def _guess(self) -> _Guessed:
        from maildiag.discovery import guess

        records = self.ctx.look.mx(self.ctx.domain)  # waits for the shared lookup
        published = self.srv is not None and self.srv.found_any()
        if published or (self.mx is not None and self.mx.matched() is not None):
            return _Guessed(skipped="published")
        mx_hosts = [h for _, h in records if h] if isinstance(records, list) else []
        cands = guess.candidates(self.ctx.needed, self.ctx.domain, mx_hosts)
        resolved = self.ctx.look.resolve_all([c.host for c in cands])
        ips = {host: r.ips for host, r in resolved.items()}
        probes = [(ips[c.host][0], c.port, c.security) for c in cands if ips.get(c.host)]
        outcomes = guess.probe_all(
            probes,
            deadline=self.ctx.budget.net_deadline,
            timeout=self.ctx.budget.lifetime(),
            port_map=self.ctx.port_map,
        )
        chosen = guess.choose(self.ctx.needed, cands, lambda h: ips.get(h, ()), outcomes)
        report = {
            f"{c.host}:{c.port}": outcomes.get((ips[c.host][0], c.port, c.security), "")
            for c in cands
            if ips.get(c.host)
        }
        return _Guessed(chosen, {k: v for k, v in report.items() if v})

    def offer(self) -> Offer | None:
        guessed: _Guessed | None = self.result(0)
        if guessed is None or not guessed.chosen:
            return None
        offer = Offer()
        for service, (cand, certainty) in guessed.chosen.items():
            offer.servers[service] = self.target(service, cand.host, cand.port, cand.security)
            offer.certainty[service] = certainty
        hosts = dict.fromkeys(c.host for c, _ in guessed.chosen.values())
        offer.note = "guess: " + ", ".join(hosts)
        return offer

    def data(self) -> dict[str, Any]:
        guessed: _Guessed | None = self.result(0)
        if guessed is None:
            return {"result": "timeout"}
        if guessed.skipped:
            return {"skipped": guessed.skipped}
        used = {
            str(s): f"{c.host}:{c.port}/{c.security} ({how})"
            for s, (c, how) in guessed.chosen.items()
        }
        return {"probes": guessed.probes, "used": used}


def build_steps(ctx: Context, home: Provider | None) -> list[Step]:
    """The steps for this address, in rank order (see the module docstring)."""
    if not ctx.needed:
        return []
    if home is not None:
        return [ProviderStep(ctx, home)]
    srv, mx = SrvStep(ctx), MxStep(ctx)
    return [
        srv,
        AutoconfigStep(ctx),
        IspdbStep(ctx),
        AutodiscoverStep(ctx),
        mx,
        GuessStep(ctx, srv, mx),
    ]
