"""Blocked mail ports or a host that is down: one connection to port 443 tells them apart.

A connect that times out says only that nothing answered. When every mail port tried on a host
timed out (the configured one and its alternatives), one TCP connection to port 443 of the same
host decides what the user should do:

* port 443 answers (it connects, or the host refuses it: either way packets reach the host and
  come back) while at least two mail ports do not: something on the way drops mail ports only —
  the internet provider, a firewall, an antivirus — signal ``connect.ports_blocked``;
* port 443 does not answer either: the host is down or unreachable from here —
  ``connect.host_down``.

Anything else (a mail port of the host answered, port 443 could not be tried, a single mail port
tried) leaves the timeout as it is. The probe starts as soon as a connect to the host times out,
beside the alternatives, so the verdict costs no time of its own; it opens one TCP connection,
sends nothing and closes it, once per host per run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from maildiag.errors import NetError
from maildiag.models import Observation, Problem, Status
from maildiag.scheduler import Job

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns

HTTPS_PORT = 443
_ANSWERED = ("connected", "refused")
_NO_ANSWER = ("timeout", "unreachable")
_RESULTS = {
    "connect.refused": "refused",
    "connect.timeout": "timeout",
    "connect.unreachable": "unreachable",
    "dns.host_unresolved": "unresolved",
}


def _timed_out(obs: Observation) -> bool:
    return obs.status is Status.FAIL and any(p.signal == "connect.timeout" for p in obs.problems)


class HostProbes:
    """The port-443 probes of one run: started from the observation stream, applied at the end."""

    def __init__(self, *, timeout: float, dns: Dns | None, enabled: bool = True) -> None:
        self.timeout = timeout
        self.dns = dns
        self.enabled = enabled
        self.results: dict[str, str] = {}  # host (lower case) -> connected, refused, timeout ...
        self._started: set[str] = set()

    def observe(self, obs: Observation) -> list[Job]:
        """A probe job when a connect to a host not probed yet has just timed out."""
        if not self.enabled or obs.target is None or not obs.check.endswith(".connect"):
            return []
        host = obs.target.host.lower()
        if host in self._started or not _timed_out(obs):
            return []
        self._started.add(host)
        return [Job(f"https://{host}:{HTTPS_PORT}", (), self._work(obs.target.host), host=host)]

    def _work(self, host: str) -> Callable[[Callable[[Observation], None]], None]:
        def work(_: Callable[[Observation], None]) -> None:
            from maildiag.net import connect

            try:
                connect(host, HTTPS_PORT, timeout=self.timeout, dns=self.dns).close()
                result = "connected"
            except NetError as exc:
                result = _RESULTS.get(exc.signal, "error")
            self.results[host.lower()] = result

        return work

    def apply(self, observations: Sequence[Observation]) -> list[Observation]:
        """The connect timeouts of hosts with a verdict, as ``ports_blocked`` or ``host_down``."""
        connects: dict[str, list[Observation]] = {}
        for obs in observations:
            if obs.target is not None and obs.check.endswith(".connect"):
                connects.setdefault(obs.target.host.lower(), []).append(obs)
        verdicts: dict[str, tuple[str, str, str]] = {}  # host -> (signal, https result, ports)
        for host, seen in connects.items():
            result = self.results.get(host)
            if result is None or not all(_timed_out(o) for o in seen):
                continue
            ports = sorted({o.target.port for o in seen if o.target is not None})
            listed = ", ".join(str(port) for port in ports)
            if result in _ANSWERED and len(ports) >= 2:
                verdicts[host] = ("connect.ports_blocked", result, listed)
            elif result in _NO_ANSWER:
                verdicts[host] = ("connect.host_down", result, listed)
        out = []
        for obs in observations:
            host = obs.target.host.lower() if obs.target is not None else ""
            verdict = verdicts.get(host) if obs.check.endswith(".connect") else None
            if verdict is not None:
                signal, result, listed = verdict
                problems = tuple(
                    Problem(signal, p.text, {**p.params, "https": result, "ports": listed})
                    if p.signal == "connect.timeout"
                    else p
                    for p in obs.problems
                )
                data = {**obs.data, "https_probe": {"port": HTTPS_PORT, "result": result}}
                obs = replace(obs, problems=problems, data=data)
            out.append(obs)
        return out
