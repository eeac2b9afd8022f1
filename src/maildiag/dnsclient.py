"""DNS lookups through dnspython, every query bounded by ``timeout`` and ``lifetime``.

``Dns`` is passed in (never a global), so tests point it at a loopback server with
``Dns("127.0.0.1:5353")``. Every failure is a ``DnsError`` whose ``kind`` tells NXDOMAIN,
"no such record", "the server did not answer" and other errors apart, because the advice differs.

Each lookup method takes an optional ``lifetime`` (seconds, capped at ``timeout``): a caller with
a deadline (discovery) passes what is left of it, so dependent lookups never add up to more than
one timeout. Names may be given in Unicode; they go on the wire as A-labels (UTS 46).

dnspython is imported on the first query, not before: a run whose servers are IP addresses asks
nothing. Without ``--resolver``, a server's addresses come from the system's resolver first (as
the user's mail program gets them: /etc/hosts, nsswitch, the system's DNS servers); dnspython is
asked only when the system finds nothing, to tell why (NXDOMAIN, no record, no answer).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DnsErrorKind = Literal["nxdomain", "no_answer", "timeout", "error"]


class DnsError(Exception):
    def __init__(self, kind: DnsErrorKind, name: str, resolver: str, detail: str = "") -> None:
        self.kind = kind
        self.name = name
        self.resolver = resolver
        self.detail = detail
        super().__init__(f"{name}: {kind}{': ' + detail if detail else ''} (resolver {resolver})")


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # "" when the target is "." (RFC 2782: service not offered)


def parse_server(spec: str) -> tuple[str, int]:
    """``IP[:PORT]`` or ``[IPv6]:PORT`` of a DNS server -> (ip, port); ValueError says why."""
    from maildiag.options import DNS_PORT, parse_resolver, split_host_port

    host, port = split_host_port(parse_resolver(spec), DNS_PORT)
    assert port is not None
    return host, port


class Dns:
    """A resolver: the system's, or one DNS server named by ``--resolver``."""

    def __init__(
        self,
        server: str | None = None,
        timeout: float = 10.0,
        *,
        port_map: Mapping[int, int] | None = None,
    ) -> None:
        self.timeout = timeout
        # tests on loopback: a connect to port p of any name goes to port_map[p] (net.connect),
        # as if the servers this resolver names listened there; discovery's probes and HTTPS
        # fetches go there too (pipeline)
        self.port_map: Mapping[int, int] = dict(port_map or {})
        self._memo: dict[str, list[str] | DnsError] = {}  # addresses() outcomes of this run
        self._server = parse_server(server) if server else None
        self._resolver: Any = None  # dnspython's, built on the first query (_dnspython)
        self._lock = threading.Lock()
        self._label = f"{self._server[0]}:{self._server[1]}" if self._server else None
        self.explicit = bool(server)

    @property
    def label(self) -> str:
        """The DNS server(s) asked, for reports: ``--resolver``'s, else the system's."""
        if self._label is None:
            servers = _system_nameservers()
            if servers:
                self._label = ",".join(servers)
            else:  # no /etc/resolv.conf to read (Windows): as dnspython finds them
                self._label = ",".join(str(n) for n in self._dnspython().nameservers) or "system"
        return self._label

    def _dnspython(self) -> Any:
        """dnspython's resolver for this run, built (and dnspython imported) on first use."""
        with self._lock:
            if self._resolver is None:
                self._resolver = self._build_resolver()
            return self._resolver

    def _build_resolver(self) -> Any:
        import dns.resolver

        if self._server is not None:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self._server[0]]
            resolver.port = self._server[1]
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                resolver = dns.resolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        # timeout bounds one query to one server; lifetime bounds the whole lookup incl. retries
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        return resolver

    def _lifetime(self, lifetime: float | None) -> float:
        if lifetime is None:
            return self.timeout
        return max(0.05, min(lifetime, self.timeout))

    def _query(self, name: str, rdtype: str, lifetime: float | None = None) -> Any:
        import dns.exception
        import dns.resolver

        from maildiag.address import AddressError, to_ascii_host

        try:
            wire_name = to_ascii_host(name)
        except AddressError as exc:
            raise DnsError("error", name, self.label, str(exc)) from exc
        try:
            return self._dnspython().resolve(
                wire_name, rdtype, search=False, lifetime=self._lifetime(lifetime)
            )
        except dns.resolver.NXDOMAIN as exc:
            raise DnsError("nxdomain", name, self.label) from exc
        except dns.resolver.NoAnswer as exc:
            raise DnsError("no_answer", name, self.label, f"no {rdtype} record") from exc
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsError(
                "timeout", name, self.label, f"no answer within {self.timeout:g}s"
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsError("error", name, self.label, _first_line(exc)) from exc
        except dns.exception.DNSException as exc:
            raise DnsError("error", name, self.label, _first_line(exc)) from exc

    def known(self, host: str) -> list[str] | DnsError | None:
        """What an earlier ``addresses(host)`` of this run found (addresses or the error)."""
        return self._memo.get(host.lower().rstrip("."))

    def addresses(self, host: str, lifetime: float | None = None) -> list[str]:
        """A and AAAA addresses of ``host`` (IPv4 first); DnsError when it has neither.

        A and AAAA are asked at the same time, so a silent server costs one timeout, not two.
        The outcome is remembered for the life of this resolver (one run): discovery's lookups
        serve the probes, and a dead resolver costs one timeout per run, not one per check.
        """
        import ipaddress

        try:
            ipaddress.ip_address(host.strip("[]"))
            return [host.strip("[]")]
        except ValueError:
            pass
        key = host.lower().rstrip(".")
        known = self._memo.get(key)
        if isinstance(known, DnsError):
            raise known
        if known is not None:
            return list(known)
        try:
            found = self._lookup_addresses(host, lifetime)
        except DnsError as exc:
            self._memo[key] = exc
            raise
        self._memo[key] = found
        return list(found)

    def _lookup_addresses(self, host: str, lifetime: float | None) -> list[str]:
        if not self.explicit:
            wait = self._lifetime(lifetime)
            started = time.monotonic()
            found = _system_addresses(host, wait)
            if found:
                return found
            # why the system found nothing, within what is left of the same lifetime
            lifetime = wait - (time.monotonic() - started)
        return self._dns_addresses(host, lifetime)

    def _dns_addresses(self, host: str, lifetime: float | None) -> list[str]:
        from maildiag.threads import DaemonPool

        with DaemonPool(2, "dns-addr") as pool:
            futures = [pool.submit(self._addresses_of, host, t, lifetime) for t in ("A", "AAAA")]
            results = [f.result() for f in futures]
        found = [ip for ips, _ in results for ip in ips]
        errors = [err for _, err in results if err is not None]
        if found:
            return found
        for kind in ("nxdomain", "timeout", "error"):  # the most telling failure wins
            for err in errors:
                if err.kind == kind:
                    raise err
        raise DnsError("no_answer", host, self.label, "no A/AAAA record")

    def _addresses_of(
        self, host: str, rdtype: str, lifetime: float | None
    ) -> tuple[list[str], DnsError | None]:
        try:
            return [r.address for r in self._query(host, rdtype, lifetime)], None
        except DnsError as exc:
            return [], exc

    def mx(self, domain: str, lifetime: float | None = None) -> list[tuple[int, str]]:
        """MX records sorted by preference; a null MX (RFC 7505, ".") gives an empty host."""
        answer = self._query(domain, "MX", lifetime)
        records = [(r.preference, _host_text(r.exchange)) for r in answer]
        return sorted(records)

    def srv(self, name: str, lifetime: float | None = None) -> list[SrvRecord]:
        """SRV records ordered by priority, then weight (highest first)."""
        answer = self._query(name, "SRV", lifetime)
        records = [SrvRecord(r.priority, r.weight, r.port, _host_text(r.target)) for r in answer]
        return sorted(records, key=lambda r: (r.priority, -r.weight))


def _system_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The ``nameserver`` entries of resolv.conf, as dnspython reads them ([] when none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(65536).splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "nameserver":
            out.append(tokens[1])
    return out


def _system_addresses(host: str, wait: float) -> list[str]:
    """The system resolver's addresses of ``host`` (IPv4 first), within ``wait`` seconds; []
    when it finds none or does not answer in time (getaddrinfo has no timeout: a thread)."""
    import socket

    from maildiag.address import AddressError, to_ascii_host

    try:
        name = to_ascii_host(host)
    except AddressError:
        return []
    box: list[Any] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(name, None, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):
            box.append(None)

    worker = threading.Thread(target=lookup, name=f"getaddrinfo:{name}", daemon=True)
    worker.start()
    worker.join(wait)
    if not box or not box[0]:
        return []
    v4 = [str(a[4][0]) for a in box[0] if a[0] == socket.AF_INET]
    v6 = [str(a[4][0]) for a in box[0] if a[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 + v6))


def _host_text(name: Any) -> str:
    """A target name as text without the final dot; the root (".") becomes ""."""
    text: str = name.to_text(omit_final_dot=True).lower()
    return "" if text in ("", "@", ".") else text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
