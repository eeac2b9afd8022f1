"""DNS lookups through dnspython, every query bounded by ``timeout`` and ``lifetime``.

``Dns`` is passed in (never a global), so tests point it at a loopback server with
``Dns("127.0.0.1:5353")``. Every failure is a ``DnsError`` whose ``kind`` tells NXDOMAIN,
"no such record", "the server did not answer" and other errors apart, because the advice differs.
"""

from __future__ import annotations

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


def parse_server(spec: str, default_port: int = 53) -> tuple[str, int]:
    """``IP[:PORT]`` or ``[IPv6]:PORT`` -> (ip, port); ValueError with a one-line message."""
    import ipaddress

    spec = spec.strip()
    host, port = spec, default_port
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"resolver {spec!r}: expected [IPv6]:PORT")
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _port(port_text, spec)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"resolver {spec!r}: expected an IP address, optionally with :PORT") from None
    return host, port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{spec!r}: port must be a number from 1 to 65535")
    return int(text)


class Dns:
    """A resolver: the system's, or one DNS server named by ``--resolver``."""

    def __init__(self, server: str | None = None, timeout: float = 10.0) -> None:
        import dns.resolver

        self.timeout = timeout
        if server:
            ip, port = parse_server(server)
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [ip]
            self._resolver.port = port
            self.label = f"{ip}:{port}"
        else:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.resolver.Resolver(configure=False)
                self._resolver.nameservers = ["127.0.0.1"]
            self.label = ",".join(str(n) for n in self._resolver.nameservers) or "system"
        # timeout bounds one query to one server; lifetime bounds the whole lookup incl. retries
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self.explicit = bool(server)

    def _query(self, name: str, rdtype: str) -> Any:
        import dns.exception
        import dns.resolver

        try:
            return self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsError("nxdomain", name, self.label) from None
        except dns.resolver.NoAnswer:
            raise DnsError("no_answer", name, self.label, f"no {rdtype} record") from None
        except dns.resolver.LifetimeTimeout:
            raise DnsError("timeout", name, self.label, f"no answer within {self.timeout:g}s") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsError("error", name, self.label, _first_line(exc)) from None
        except dns.exception.DNSException as exc:
            raise DnsError("error", name, self.label, _first_line(exc)) from None

    def addresses(self, host: str) -> list[str]:
        """A and AAAA addresses of ``host`` (IPv4 first); DnsError when it has neither."""
        import ipaddress

        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        found: list[str] = []
        first_error: DnsError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                found += [r.address for r in self._query(host, rdtype)]
            except DnsError as exc:
                if exc.kind in ("nxdomain", "timeout"):
                    raise
                first_error = first_error or exc
        if not found:
            raise first_error or DnsError("no_answer", host, self.label, "no A/AAAA record")
        return found

    def mx(self, domain: str) -> list[tuple[int, str]]:
        """MX records sorted by preference; a null MX (RFC 7505, ".") gives an empty host."""
        answer = self._query(domain, "MX")
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer]
        return sorted(records)

    def srv(self, name: str) -> list[SrvRecord]:
        """SRV records ordered by priority, then weight (highest first)."""
        answer = self._query(name, "SRV")
        records = [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True).lower())
            for r in answer
        ]
        return sorted(records, key=lambda r: (r.priority, -r.weight))

    def txt(self, name: str) -> list[str]:
        answer = self._query(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
