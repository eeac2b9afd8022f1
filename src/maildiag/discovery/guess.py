"""Guesses that reach: the names a small domain's mail servers usually have, probed.

When a domain publishes nothing (no provider entry, SRV, autoconfig, ISPDB, Autodiscover, or MX
at a known provider), these hosts are tried for each service, best first:

    imap. / smtp. / pop. + domain     (the service's own name)
    mail. + domain
    the MX hosts, by preference       (a self-hosted domain's one server often does everything)
    the domain itself

on the standard ports in RFC 8314's order (implicit TLS first: 993/143, 465/587, 995/110).
Every (address, port) is probed once and all at once, within one deadline: a TCP connect, for
implicit TLS a handshake (not verified: the ``<svc>.tls`` check judges the certificate later),
then the first byte of the greeting, which must be the protocol's ("2"/"4"/"5" for an SMTP reply
code, "*" for IMAP, "+"/"-" for POP3), so an SMTP server on a POP3 port is not taken for POP3.
The probe closes at once (after the protocol's QUIT/LOGOUT): no login, nothing else sent.

The first candidate whose probe answered is the guess (certainty ``answered``). When none
answered — the user's network may block the ports, which is exactly what ``check`` should then
report — a conventional name that resolves is taken on the implicit-TLS port (certainty
``resolves``), as before this module existed; MX hosts and the bare domain are not taken on their
name alone (they resolve for reasons other than mail submission).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from maildiag.config import DEFAULT_PORTS
from maildiag.discovery.https import deadline_guard
from maildiag.models import Security, Service
from maildiag.threads import DaemonPool

# the service's own prefix, tried first, then the shared "mail."
PREFIXES: dict[Service, tuple[str, ...]] = {
    Service.SMTP: ("smtp", "mail"),
    Service.IMAP: ("imap", "mail"),
    Service.POP3: ("pop", "mail"),
}
MODES: tuple[Security, ...] = (Security.SSL, Security.STARTTLS)  # RFC 8314 section 5.1
GREETING: dict[Service, bytes] = {Service.SMTP: b"245", Service.IMAP: b"*", Service.POP3: b"+-"}
# the protocol's goodbye, by standard port: a probe leaves as a polite client does
_GOODBYE: dict[int, bytes] = {
    465: b"QUIT\r\n",
    587: b"QUIT\r\n",
    993: b"a LOGOUT\r\n",
    143: b"a LOGOUT\r\n",
    995: b"QUIT\r\n",
    110: b"QUIT\r\n",
}
MAX_MX = 2  # MX hosts taken as candidates
MAX_PROBES = 32


@dataclass(frozen=True, slots=True)
class Candidate:
    service: Service
    host: str
    port: int
    security: Security
    named: bool  # a conventional name (imap./mail. ...): may be guessed on its name alone


def candidates(
    services: Sequence[Service], domain: str, mx_hosts: Sequence[str]
) -> list[Candidate]:
    """Every (service, host, port, mode) worth a probe, best first per service."""
    out: list[Candidate] = []
    for service in services:
        named = [f"{p}.{domain}" for p in PREFIXES[service]]
        hosts = [*named, *mx_hosts[:MAX_MX], domain]
        for host in dict.fromkeys(h.lower().rstrip(".") for h in hosts if h):
            for mode in MODES:
                port = DEFAULT_PORTS[(service, mode)]
                out.append(Candidate(service, host, port, mode, host in named))
    return out


def probe_all(
    probes: Sequence[tuple[str, int, Security]],
    *,
    deadline: float,
    timeout: float,
    port_map: Mapping[int, int],
) -> dict[tuple[str, int, Security], str]:
    """Probe each (ip, port, mode) at once; the outcome of each: "greeting:<byte>" or why not."""
    unique = list(dict.fromkeys(probes))[:MAX_PROBES]
    if not unique:
        return {}
    context = _unverified_context()

    def one(item: tuple[str, int, Security]) -> str:
        ip, port, mode = item
        goodbye = _GOODBYE.get(port, b"")
        return probe(ip, port_map.get(port, port), mode, deadline, timeout, context, goodbye)

    with DaemonPool(len(unique), "guess") as pool:
        futures = [pool.submit(one, item) for item in unique]
        return dict(zip(unique, (f.result() for f in futures), strict=True))


def probe(
    ip: str,
    port: int,
    mode: Security,
    deadline: float,
    timeout: float,
    context: ssl.SSLContext,
    goodbye: bytes = b"",
) -> str:
    """One probe: connect, TLS when ``mode`` is SSL, read the first byte, say ``goodbye``;
    never raises."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return "timeout"
    try:
        sock = socket.create_connection((ip, port), min(timeout, remaining))
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error:{exc.__class__.__name__}"
    holder: list[socket.socket] = [sock]
    try:
        with deadline_guard(lambda: holder[-1], deadline):
            outcome = _greeting(holder, mode, context, deadline)
            if outcome.startswith("greeting:") and goodbye:
                try:
                    holder[-1].sendall(goodbye)
                except OSError:
                    pass
            return outcome
    finally:
        for s in holder:
            s.close()


def _greeting(
    holder: list[socket.socket], mode: Security, context: ssl.SSLContext, deadline: float
) -> str:
    sock = holder[-1]
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        if mode is Security.SSL:
            sock = context.wrap_socket(sock, server_hostname=None)
            holder.append(sock)
        first = sock.recv(1)
    except ssl.SSLError:
        return "tls_failed"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return "timeout" if time.monotonic() >= deadline else f"error:{exc.__class__.__name__}"
    if not first:
        return "closed"
    return "greeting:" + first.decode("latin-1")


def answered(outcome: str, service: Service) -> bool:
    """Whether a probe's outcome is ``service``'s greeting."""
    return outcome.startswith("greeting:") and outcome[-1:].encode("latin-1") in GREETING[service]


def choose(
    services: Sequence[Service],
    cands: Sequence[Candidate],
    addresses: Callable[[str], Sequence[str]],
    outcomes: Mapping[tuple[str, int, Security], str],
) -> dict[Service, tuple[Candidate, str]]:
    """Per service the first candidate that answered (certainty ``answered``), else the first
    conventional name that resolves, on the implicit-TLS port (``resolves``)."""
    chosen: dict[Service, tuple[Candidate, str]] = {}
    for service in services:
        mine = [c for c in cands if c.service is service]
        for cand in mine:
            ips = addresses(cand.host)
            if ips and answered(outcomes.get((ips[0], cand.port, cand.security), ""), service):
                chosen[service] = (cand, "answered")
                break
        else:
            for cand in mine:
                if cand.named and cand.security is MODES[0] and addresses(cand.host):
                    chosen[service] = (cand, "resolves")
                    break
    return chosen


def _unverified_context() -> ssl.SSLContext:
    # only "does this port speak TLS and then the protocol": the tls check verifies later (and
    # a context that verifies nothing needs no trust store loaded)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
