"""The ``dns`` check: what discovery's lookups say about the domain and the servers' names.

``observe(facts)`` builds the check's Observation in named steps, each adding problems (signals
``dns.*``, explained by the rule base) and facts (``Summary`` values, worded in
rules/ui-report.yaml ``summary.dns.*``):

1. ``mx_records``      the domain's MX: missing domain, no MX, null MX, a resolver that denies a
                       well-known domain (broken or filtered), or the MX hosts;
2. ``nothing_found``   when no server was found: the timeouts that explain it, else
                       ``dns.no_servers``;
3. ``explicit_relief`` with servers the user named, only their names must resolve (SPEC): the
                       domain's own trouble stays as data, not as a failure;
4. ``server_names``    each server's name resolves (or why not);
5. ``resolver_silent`` a resolver that did not answer, said once and first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maildiag.dnsclient import DnsError
from maildiag.models import Observation, Problem, Service, Status, Summary, Target

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.discovery.lookups import Budget, Lookups


@dataclass
class DnsFacts:
    """What discovery hands the ``dns`` check."""

    address: Address | None  # None: a server checked without a mailbox (check HOST[:PORT])
    look: Lookups
    budget: Budget
    targets: Sequence[Target]
    needed: Sequence[Service]
    mx: list[tuple[int, str]] | DnsError | None  # None: not asked (every server explicit)
    known_domain: bool  # the domain is in the provider database
    explicit_given: bool
    discovered_any: bool
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def resolver(self) -> str:
        return self.look.dns.label


def observe(facts: DnsFacts) -> Observation:
    check = _DnsCheck(facts)
    check.mx_records()
    check.nothing_found()
    check.explicit_relief()
    check.server_names()
    check.resolver_silent()
    return check.observation()


class _DnsCheck:
    def __init__(self, facts: DnsFacts) -> None:
        self.f = facts
        self.data = facts.data
        self.problems: list[Problem] = []
        self.timeouts: list[str] = []
        self.facts: list[Summary] = []  # what the summary lists

    @property
    def domain(self) -> str:
        return self.f.address.domain if self.f.address is not None else ""

    def fact(self, key: str, **params: Any) -> None:
        self.facts.append(Summary(key, params))

    def failure(self, err: DnsError, extra: Mapping[str, Any] | None = None) -> None:
        if err.kind == "timeout":
            self.timeouts.append(err.name)
            return
        params = {"name": err.name, "resolver": self.f.resolver, **(extra or {})}
        self.problems.append(Problem("dns.error", err.detail or err.kind, params))

    # --- 1 ---------------------------------------------------------------------------------

    def mx_records(self) -> None:
        records = self.f.mx
        if records is None:
            return
        if isinstance(records, DnsError):
            self.data["mx"] = records.kind
            self._mx_failure(records)
            return
        hosts = [h for _, h in records if h]
        self.data["mx"] = [{"preference": p, "host": h or "."} for p, h in records]
        if not hosts:  # RFC 7505 null MX: the domain accepts no mail
            self.problems.append(
                Problem("dns.no_mx", "null MX", {"domain": self.domain, "null_mx": True})
            )
            self.fact("dns.null_mx", domain=self.domain)
            return
        listed = f"{', '.join(hosts[:3])}{' ...' if len(hosts) > 3 else ''}"
        self.fact("dns.mx", hosts=listed)

    def _mx_failure(self, err: DnsError) -> None:
        domain = self.domain
        if err.kind == "nxdomain" and self.f.known_domain:
            # yandex.ru, gmail.com ... exist: a resolver that denies them is broken or filtered
            # (captive portal, no network behind it), not the user's typo
            params = {"domain": domain, "resolver": self.f.resolver}
            self.problems.append(Problem("dns.resolver_broken", "NXDOMAIN", params))
            self.fact("dns.resolver_denies", resolver=self.f.resolver, domain=domain)
        elif err.kind == "nxdomain":
            self.problems.append(Problem("dns.nxdomain", "NXDOMAIN", {"domain": domain}))
            self.fact("dns.nxdomain", domain=domain)
        elif err.kind == "no_answer":
            self.problems.append(Problem("dns.no_mx", "", {"domain": domain, "null_mx": False}))
            self.fact("dns.no_mx", domain=domain)
        else:
            self.failure(err)

    # --- 2 ---------------------------------------------------------------------------------

    def nothing_found(self) -> None:
        if not self.f.needed or self.f.discovered_any:
            return
        # the lookups discovery depended on: their timeouts explain why nothing was found
        self.timeouts.extend(self.f.look.timed_out())
        records = self.data.get("srv", {}).get("records", {})
        self.timeouts.extend(name for name, value in records.items() if value == "timeout")
        if any(p.signal == "dns.nxdomain" for p in self.problems) or self.timeouts:
            return
        services = [str(s) for s in self.f.needed]
        self.problems.append(
            Problem("dns.no_servers", "", {"domain": self.domain, "services": services})
        )
        self.fact("dns.no_servers")

    # --- 3 ---------------------------------------------------------------------------------

    def explicit_relief(self) -> None:
        if not self.f.explicit_given or not (self.problems or self.timeouts):
            return
        # The user named servers: with them the dns check establishes only that their names
        # resolve (SPEC). A domain that does not exist, has no MX or publishes nothing only
        # means the other services were not found; it is kept as data, not as a failure.
        signals = [p.signal for p in self.problems]
        self.data["discovery_problems"] = signals + (["dns.timeout"] if self.timeouts else [])
        self.problems.clear()
        self.timeouts.clear()

    # --- 4 ---------------------------------------------------------------------------------

    def server_names(self) -> None:
        addresses: dict[str, Any] = {}
        unresolved = 0
        for target in self.f.targets:
            result = self.f.look.resolved(target.host)
            if result is not None and result.ips:
                addresses[target.host] = list(result.ips)
                continue
            unresolved += 1
            err = (result.error if result else None) or self.f.look.timeout_error(target.host)
            addresses[target.host] = err.kind
            self._unresolved(target, err)
        self.data["addresses"] = addresses
        if self.f.targets:
            ok = len(self.f.targets) - unresolved
            self.fact("dns.resolved", resolved=ok, servers=len(self.f.targets))

    def _unresolved(self, target: Target, err: DnsError) -> None:
        params = {
            "host": target.host,
            "service": str(target.service),
            "port": target.port,
            "security": str(target.security),
        }
        broken = any(p.signal == "dns.resolver_broken" for p in self.problems)
        if self.f.known_domain and err.kind == "nxdomain" and broken:
            return  # the same broken resolver, already said once
        if err.kind in ("nxdomain", "no_answer"):
            self.problems.append(Problem("dns.host_unresolved", err.detail or err.kind, params))
        else:
            self.failure(err, params)

    # --- 5 ---------------------------------------------------------------------------------

    def resolver_silent(self) -> None:
        if not self.timeouts:
            return
        names = list(dict.fromkeys(self.timeouts))
        resolver, timeout = self.f.resolver, self.f.budget.timeout
        params = {"name": names[0], "names": names, "resolver": resolver, "timeout": timeout}
        self.problems.insert(
            0, Problem("dns.timeout", f"no answer from {resolver} within {timeout:g}s", params)
        )
        self.facts.insert(0, Summary("dns.resolver_silent", {"resolver": resolver}))

    # --- the observation --------------------------------------------------------------------

    def status(self) -> Status:
        worst = Status.OK
        for problem in self.problems:
            if problem.signal != "dns.no_mx":
                return Status.FAIL
            worst = Status.WARN
        return worst

    def observation(self) -> Observation:
        if self.f.explicit_given and not self.f.needed:
            summary = Summary("dns.explicit", {"facts": self.facts})
        else:
            summary = Summary("dns.domain", {"domain": self.domain, "facts": self.facts})
        return Observation(
            check="dns",
            status=self.status(),
            summary=summary,
            data=self.data,
            problems=tuple(self.problems),
            duration_ms=self.f.budget.elapsed_ms(),
        )
