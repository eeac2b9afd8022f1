"""Discovery's time budget and its memoised DNS lookups.

``Budget(timeout)``: every step of discovery starts at once; a step that depends on another (the
A record of an SRV target, the probe of a resolved name) gets what is left of ``timeout``, but
at least ``min(1, timeout)`` seconds, and nothing runs past ``timeout + min(2, timeout)`` (the
hard deadline). A resolver that never answers therefore costs one timeout in total, not one per
lookup. Network steps (HTTPS, probes) end by ``net_deadline``, half-way into the grace period, so
their outcome is in before the hard deadline.

``Lookups``: thread-safe lookups shared by the steps: the same name is asked once however many
steps want it (the MX records feed the MX step, the guesses, Autodiscover and the ``dns`` check).
A failure is a ``DnsError`` value, never raised.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from maildiag.dnsclient import DnsError
from maildiag.threads import DaemonPool

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns, SrvRecord

K = TypeVar("K")
V = TypeVar("V")


class Budget:
    def __init__(self, timeout: float) -> None:
        self.timeout = max(0.05, timeout)
        self.start = time.monotonic()
        self.deadline = self.start + self.timeout
        self.hard_deadline = self.deadline + min(2.0, self.timeout)
        self.net_deadline = self.deadline + (self.hard_deadline - self.deadline) / 2
        self._floor = min(1.0, self.timeout)

    def lifetime(self) -> float:
        """Seconds the next lookup (or connect) may take (see the module docstring)."""
        now = time.monotonic()
        wanted = max(self.deadline - now, self._floor)
        return max(0.05, min(self.timeout, wanted, self.hard_deadline - now))

    def left(self) -> float:
        return max(0.0, self.hard_deadline - time.monotonic())

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)


@dataclass(frozen=True, slots=True)
class Resolved:
    host: str
    ips: tuple[str, ...] = ()
    error: DnsError | None = None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class Lookups:
    """Memoised, thread-safe lookups bounded by the budget."""

    def __init__(self, dns: Dns, budget: Budget) -> None:
        self.dns = dns
        self.budget = budget
        self._lock = threading.Lock()
        self._hosts: dict[str, Future[Resolved]] = {}
        self._records: dict[tuple[str, str], Future[object]] = {}

    def timeout_error(self, name: str) -> DnsError:
        return DnsError("timeout", name, self.dns.label, "no answer in time")

    # --- A/AAAA ---------------------------------------------------------------------------

    def resolve(self, host: str) -> Resolved:
        """A/AAAA of ``host``; the same host is looked up once however many ask."""
        if is_ip(host):
            return Resolved(host, (host.strip("[]"),))
        future, owner = self._claim(self._hosts, host)
        if owner:
            try:
                result = Resolved(host, tuple(self.dns.addresses(host, self.budget.lifetime())))
            except DnsError as exc:
                result = Resolved(host, (), exc)
            except Exception as exc:  # noqa: BLE001 - a bug in dnspython must not end the run
                result = Resolved(host, (), DnsError("error", host, self.dns.label, repr(exc)))
            future.set_result(result)
            return result
        try:
            return future.result(timeout=self.budget.left())
        except TimeoutError:
            return Resolved(host, (), self.timeout_error(host))

    def resolve_all(self, hosts: Sequence[str]) -> dict[str, Resolved]:
        """Several hosts at once (each on its own thread)."""
        unique = list(dict.fromkeys(hosts))
        if len(unique) <= 1:
            return {h: self.resolve(h) for h in unique}
        with DaemonPool(len(unique), "dns-host") as pool:
            futures = {h: pool.submit(self.resolve, h) for h in unique}
            return {h: f.result() for h, f in futures.items()}

    def resolved(self, host: str) -> Resolved | None:
        """A finished lookup of ``host`` if one was made (None if never asked or still running)."""
        if is_ip(host):
            return Resolved(host, (host.strip("[]"),))
        future = self._hosts.get(host)
        return future.result() if future is not None and future.done() else None

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

    # --- MX and SRV -----------------------------------------------------------------------

    def mx(self, domain: str) -> list[tuple[int, str]] | DnsError:
        """MX records of ``domain`` (sorted; a null MX has an empty host), or the DnsError."""
        found = self._record("MX", domain, lambda: self.dns.mx(domain, self.budget.lifetime()))
        return cast("list[tuple[int, str]] | DnsError", found)

    def srv(self, name: str) -> list[SrvRecord] | DnsError:
        found = self._record("SRV", name, lambda: self.dns.srv(name, self.budget.lifetime()))
        return cast("list[SrvRecord] | DnsError", found)

    def record_done(self, rdtype: str, name: str) -> bool:
        future = self._records.get((rdtype, name))
        return future is not None and future.done()

    def mx_outcome(self, domain: str) -> list[tuple[int, str]] | DnsError:
        """The MX lookup's outcome if it finished, else a timeout (never waits, never asks)."""
        future = self._records.get(("MX", domain))
        if future is None or not future.done():
            return self.timeout_error(domain)
        return cast("list[tuple[int, str]] | DnsError", future.result())

    def _record(self, rdtype: str, name: str, ask: Callable[[], object]) -> object:
        future, owner = self._claim(self._records, (rdtype, name))
        if owner:
            result: object
            try:
                result = ask()
            except DnsError as exc:
                result = exc
            except Exception as exc:  # noqa: BLE001 - a bug in dnspython must not end the run
                result = DnsError("error", name, self.dns.label, repr(exc))
            future.set_result(result)
            return result
        try:
            return future.result(timeout=self.budget.left())
        except TimeoutError:
            return self.timeout_error(name)

    def _claim(self, table: dict[K, Future[V]], key: K) -> tuple[Future[V], bool]:
        """The future for ``key`` and whether the caller must fill it (the first to ask)."""
        with self._lock:
            future = table.get(key)
            if future is not None:
                return future, False
            future = Future()
            table[key] = future
            return future, True
