"""The ``clock`` check: the local clock against a reference clock, and what that explains.

Reference clocks, in order:

1. SNTP (RFC 4330) to ``--time-server HOST[:PORT]`` (default ``pool.ntp.org:123``). The reply is
   checked before it is believed: server mode, stratum 1..15, leap indicator not "alarm", a
   non-zero transmit timestamp, and our own transmit timestamp echoed as its originate timestamp
   (so a stale or spoofed datagram is ignored). One retransmission at half the timeout covers a
   lost datagram; the whole query is bounded by ``--timeout`` (at most ``SNTP_WAIT``), each
   datagram read by 512 bytes.
2. When UDP is filtered (no valid answer), the ``Date`` header of an HTTPS response (RFC 9110
   6.6.1) from the provider's web site (its help links) or the servers' host names on port 443.
   The chain and host name are verified against certifi plus ``--ca-file`` but *not* the validity
   window — the local clock is the very thing in doubt. Headers are read line by line, at most
   ``MAX_HEADER_LINES`` lines of ``MAX_LINE`` bytes, each step within the timeout.

Offsets are "positive = the local clock is ahead". Thresholds (why these numbers):

- ``WARN_SKEW`` 120 s: one-time codes (TOTP, 30 s steps, servers accept a step or two) and
  Kerberos (5 minutes) begin to fail.
- ``FAIL_SKEW`` 1 h: OAuth access tokens commonly live one hour, and certificate authorities
  back-date new certificates by about an hour, so a clock an hour behind rejects fresh
  certificates and fresh tokens; at days, every certificate window edge is in reach.

``reconcile(observations)`` is the post-pass the engine runs: a ``<svc>.tls`` observation that
failed as expired / not yet valid, whose certificates are all inside their windows by the
reference clock, is rewritten to ``tls.clock_skew`` (fix the clock), not ``cert_expired``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from maildiag.config import RunConfig
from maildiag.models import ClockFacts, Observation, Problem, Status, Summary, Target, TlsFacts

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns

DEFAULT_TIME_SERVER = "pool.ntp.org"
NTP_PORT = 123
WARN_SKEW = 120.0
FAIL_SKEW = 3600.0
NTP_EPOCH = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
MAX_DATAGRAM = 512
MAX_HEADER_LINES = 64
MAX_WEB_ATTEMPTS = 2  # HTTPS Date fallbacks tried, each bounded by the timeout
# The SNTP wait is capped below --timeout: a time server answers in milliseconds or not at all
# (UDP filtered), and the whole report waits for this check.
SNTP_WAIT = 4.0
EXPIRY_SIGNALS = ("tls.cert_expired", "tls.cert_not_yet_valid")


class ClockError(Exception):
    """A reference clock could not be read; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class ClockReading:
    offset: float  # seconds; positive: the local clock is ahead of the reference
    source: str  # "sntp:host:port" or "https-date:host"
    reference: dt.datetime  # the reference clock's time when the answer arrived
    local: dt.datetime  # the local clock's time then
    detail: dict[str, Any] = field(default_factory=dict)


# -- SNTP ---------------------------------------------------------------------------------------


def parse_time_server(spec: str | None) -> tuple[str, int]:
    """``HOST[:PORT]``, ``[v6]:PORT`` or a bare IPv6 literal → (host, port); default: the pool."""
    from maildiag.options import OptionError, split_host_port

    try:
        host, port = split_host_port(spec or DEFAULT_TIME_SERVER, NTP_PORT)
    except OptionError as exc:
        raise ClockError(f"--time-server {spec}: {exc}") from exc
    assert port is not None
    return host, port


def _to_ntp(unix: float) -> bytes:
    seconds = int(unix // 1) + NTP_EPOCH
    fraction = int((unix % 1) * 2**32)
    # The low bits of the fraction are random: the reply must echo them (RFC 4330 s.5 advice
    # against off-path spoofing); 2**-16 s is far below anything we measure.
    fraction = (fraction & ~0xFFFF) | secrets.randbits(16)
    return struct.pack("!II", seconds & 0xFFFFFFFF, fraction & 0xFFFFFFFF)


def _from_ntp(raw: bytes) -> float:
    seconds, fraction = struct.unpack("!II", raw)
    if not seconds & 0x80000000:
        seconds += 2**32  # RFC 4330 s.3: with bit 0 clear the time is in 2036-2104 (era 1)
    return float(seconds - NTP_EPOCH + fraction / 2**32)


@dataclass
class _Attempt:
    sock: socket.socket
    transmit: bytes
    t1: float  # local clock at send (unix seconds)
    mono: float
    address: str


def _validate(reply: bytes, attempt: _Attempt) -> None:
    """Raise ClockError naming what is wrong with a reply that came back on our socket."""
    if len(reply) < 48:
        raise ClockError(f"a {len(reply)}-byte reply is too short for SNTP")
    first, stratum = reply[0], reply[1]
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != 4:
        raise ClockError(f"the reply is not from a server (mode {mode})")
    if not 1 <= version <= 4:
        raise ClockError(f"unknown NTP version {version}")
    if stratum == 0:
        code = reply[12:16].decode("ascii", "replace").strip("\0 ")
        raise ClockError(f"the time server sent a kiss-o'-death ({code or 'no code'})")
    if stratum > 15 or leap == 3:
        raise ClockError("the time server says its own clock is not synchronised")
    if reply[40:48] == b"\0" * 8:
        raise ClockError("the reply has no transmit timestamp")


def sntp_query(
    host: str,
    port: int = NTP_PORT,
    *,
    timeout: float,
    now: Callable[[], dt.datetime],
    dns: Dns | None = None,
    transcript: list[str] | None = None,
) -> ClockReading:
    """One SNTP exchange (retransmitted once at half the timeout); ClockError when none works."""
    from maildiag.errors import NetError
    from maildiag.net import resolve

    log = transcript if transcript is not None else []
    try:
        addresses = resolve(host, port, dns, timeout)[:2]
    except NetError as exc:
        raise ClockError(str(exc)) from exc
    if not addresses:
        raise ClockError(f"cannot resolve {host}")
    deadline = time.monotonic() + timeout
    attempts: list[_Attempt] = []
    reasons: list[str] = []

    def send(family: int, ip: str) -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((ip, port))  # the kernel drops datagrams from anyone else
            t1 = now().timestamp()
            transmit = _to_ntp(t1)
            packet = bytes([0x23]) + b"\0" * 39 + transmit  # LI 0, version 4, mode 3 (client)
            mono = time.monotonic()
            sock.send(packet)
        except OSError as exc:
            sock.close()
            reasons.append(f"{ip}:{port}: {exc.strerror or exc}")
            return
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        log.append(f"C: SNTP request to {address}")
        attempts.append(_Attempt(sock, transmit, t1, mono, address))

    send(*addresses[0])
    resend_at: float | None = time.monotonic() + timeout / 2
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if resend_at is not None and time.monotonic() >= resend_at:
                resend_at = None
                send(*addresses[-1])  # the second address when there is one, else again
                continue
            wait = min(left, resend_at - time.monotonic()) if resend_at is not None else left
            socks = [a.sock for a in attempts]
            if not socks:
                if resend_at is None:
                    break
                time.sleep(max(0.0, wait))
                continue
            ready, _, _ = select.select(socks, [], [], max(0.0, wait))
            for sock in ready:
                attempt = next(a for a in attempts if a.sock is sock)
                try:
                    reply = sock.recv(MAX_DATAGRAM)
                except OSError as exc:  # ICMP port unreachable shows up here
                    reasons.append(f"{attempt.address}: {exc.strerror or exc}")
                    attempts.remove(attempt)
                    sock.close()
                    continue
                mono4 = time.monotonic()
                if len(reply) >= 48 and reply[24:32] != attempt.transmit:
                    log.append(
                        f"S: ignored a reply that does not echo our timestamp ({attempt.address})"
                    )
                    reasons.append(f"{attempt.address}: a reply that does not answer our request")
                    continue
                try:
                    _validate(reply, attempt)
                except ClockError as exc:
                    log.append(f"S: {exc} ({attempt.address})")
                    reasons.append(f"{attempt.address}: {exc}")
                    attempts.remove(attempt)
                    sock.close()
                    if not attempts and (resend_at is None or len(addresses) == 1):
                        resend_at = None  # it answered, wrongly: asking it again will not help
                        deadline = time.monotonic()
                    continue
                return _reading(reply, attempt, mono4, log, f"sntp:{host}:{port}")
    finally:
        for a in attempts:
            a.sock.close()
    if reasons:
        reason = reasons[-1].removeprefix(f"{host}:{port}: ")
        raise ClockError(f"sntp:{host}:{port}: {reason}")
    raise ClockError(f"sntp:{host}:{port}: no answer within {timeout:g}s (UDP may be filtered)")


def _reading(
    reply: bytes, attempt: _Attempt, mono4: float, log: list[str], source: str
) -> ClockReading:
    t1 = attempt.t1
    t4 = t1 + (mono4 - attempt.mono)  # the local clock at arrival, without a second now() call
    t2, t3 = _from_ntp(reply[32:40]), _from_ntp(reply[40:48])
    theta = ((t2 - t1) + (t3 - t4)) / 2  # RFC 4330 s.5: what to add to the local clock
    delay = (t4 - t1) - (t3 - t2)
    stratum = reply[1]
    log.append(
        f"S: stratum {stratum}, offset {-theta:+.3f}s, round trip {delay * 1000:.0f} ms "
        f"({attempt.address})"
    )
    return ClockReading(
        offset=-theta,
        source=source,
        reference=_utc(t4 + theta),
        local=_utc(t4),
        detail={
            "server": attempt.address,
            "stratum": stratum,
            "round_trip_ms": round(max(delay, 0.0) * 1000, 1),
        },
    )


def _utc(unix: float) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(unix, dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise ClockError("the reference time is out of range") from exc


# -- HTTPS Date fallback ------------------------------------------------------------------------


def https_date(
    host: str,
    port: int = 443,
    *,
    timeout: float,
    now: Callable[[], dt.datetime],
    ca_file: str | None = None,
    dns: Dns | None = None,
    transcript: list[str] | None = None,
) -> ClockReading:
    """The ``Date`` header of ``HEAD /`` over verified TLS (time window not checked)."""
    import email.utils

    from maildiag.errors import NetError
    from maildiag.net import connect, make_tls_context

    log = transcript if transcript is not None else []
    label = host if port == 443 else f"{host}:{port}"
    source = f"https-date:{label}"
    ctx = make_tls_context(ca_file)
    # X509_V_FLAG_NO_CHECK_TIME (OpenSSL >= 1.1.0): trust and name are checked, dates are not.
    ctx.verify_flags |= 0x200000
    try:
        conn = connect(host, port, timeout=timeout, dns=dns, transcript=log)
    except NetError as exc:
        raise ClockError(f"{source}: {exc}") from exc
    try:
        conn.start_tls(ctx, host)
        mono1, t1 = time.monotonic(), now().timestamp()
        for line in (
            "HEAD / HTTP/1.1",
            f"Host: {label}",
            "User-Agent: maildiag",
            "Accept: */*",
            "Connection: close",
            "",
        ):
            conn.send_line(line)
        deadline = time.monotonic() + timeout
        status = conn.read_line(deadline=deadline)
        mono2 = time.monotonic()
        if not status.startswith("HTTP/"):
            raise ClockError(f"{source}: not an HTTP response")
        date = None
        for _ in range(MAX_HEADER_LINES):
            line = conn.read_line(deadline=deadline)
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() == "date":
                date = value.strip()
                break
    except NetError as exc:
        raise ClockError(f"{source}: {exc}") from exc
    finally:
        conn.close()
    if not date:
        raise ClockError(f"{source}: the response has no Date header")
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError) as exc:
        raise ClockError(f"{source}: unreadable Date header {date[:60]!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # The header is truncated to the second and was written about half a round trip after we
    # asked: compare it with our clock at the midpoint, plus half a second for the truncation.
    reference = when.timestamp() + 0.5
    local = t1 + (mono2 - mono1) / 2
    return ClockReading(
        offset=local - reference,
        source=source,
        reference=_utc(reference),
        local=_utc(local),
        detail={
            "server": label,
            "round_trip_ms": round((mono2 - mono1) * 1000, 1),
            "resolution_s": 1,
        },
    )


def web_hosts(provider: Any, targets: Sequence[Target]) -> list[tuple[str, int]]:
    """HTTPS hosts to ask for a Date: the provider's web links first, then the mail hosts."""
    from urllib.parse import urlsplit

    found: list[tuple[str, int]] = []
    links: Any = getattr(provider, "links", None) or ()
    for attr in ("web", "website", "homepage"):  # tolerant of how the provider entry grows
        value = getattr(provider, attr, None)
        if isinstance(value, str):
            links = (value, *links)
    for link in links if isinstance(links, (list, tuple)) else ():
        try:
            parts = urlsplit(str(link))
            if parts.scheme == "https" and parts.hostname:
                found.append((parts.hostname, parts.port or 443))
        except ValueError:
            continue
    for t in targets:
        found.append((t.host, 443))
    unique: list[tuple[str, int]] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


# -- judging --------------------------------------------------------------------------------

_UNITS = ((86400, "days", "d"), (3600, "hours", "h"), (60, "minutes", "m"), (1, "seconds", "s"))


def humanize(seconds: float) -> Summary:
    """The size of an offset in its two largest units ("2 hours 5 minutes"), as words from
    rules/ui-report.yaml (``summary.duration.*``: the unit words in the plural form the number
    takes; the Russian ones in the accusative, to follow "на")."""
    left = int(round(abs(seconds)))
    letters = ""
    params: dict[str, int] = {}
    for size, name, letter in _UNITS:
        n, left = divmod(left, size)
        if n:
            letters += letter
            params[name] = n
        if letters and (len(letters) == 2 or not n):
            break  # the largest unit, and the next one only when it is not zero
    if not letters:
        letters, params = "s", {"seconds": 0}
    return Summary(f"duration.{letters}", params)


def skew_params(offset: float, source: str) -> dict[str, Any]:
    """Params a rule may quote about a clock offset (see signals.py ``clock.skew``)."""
    return {
        "offset_seconds": round(offset, 1) + 0.0,
        "offset_human": humanize(offset),
        "direction": Summary("clock.direction.ahead" if offset > 0 else "clock.direction.behind"),
        "source": source,
    }


def judge_clock(
    reading: ClockReading,
    *,
    transcript: tuple[str, ...] = (),
    duration_ms: int = 0,
    tried: Sequence[str] = (),
) -> Observation:
    offset = reading.offset
    size = abs(offset)
    data: dict[str, Any] = {
        "offset_seconds": round(offset, 3) + 0.0,  # never "-0.0"
        "source": reading.source,
        "reference": reading.reference.isoformat(),
        "local": reading.local.isoformat(),
        "warn_seconds": WARN_SKEW,
        "fail_seconds": FAIL_SKEW,
        **reading.detail,
    }
    if tried:
        data["unavailable"] = list(tried)
    facts = ClockFacts(data["offset_seconds"], reading.source, data["reference"])
    if size <= WARN_SKEW:
        if size < 60:
            summary = Summary(
                "clock.within_seconds", {"source": reading.source, "seconds": f"{size:.1f}"}
            )
        else:
            summary = Summary(
                "clock.within", {"source": reading.source, "offset_human": humanize(offset)}
            )
        return Observation(
            "clock", Status.OK, summary, None, data, (), transcript, duration_ms, facts
        )
    status = Status.FAIL if size > FAIL_SKEW else Status.WARN
    params = dict(
        skew_params(offset, reading.source), reference=data["reference"], local=data["local"]
    )
    # the evidence: what was measured against what
    text = f"{offset:+.1f} s ({reading.source})"
    return Observation(
        "clock",
        status,
        Summary(
            "clock.ahead" if offset > 0 else "clock.behind",
            {"source": reading.source, "offset_human": params["offset_human"]},
        ),
        None,
        data,
        (Problem("clock.skew", text, params),),
        transcript,
        duration_ms,
        facts,
    )


def measure(
    config: RunConfig,
    *,
    now: Callable[[], dt.datetime],
    provider: Any = None,
    targets: Sequence[Target] = (),
    dns: Dns | None = None,
) -> Observation:
    """The ``clock`` observation: SNTP, else the HTTPS Date fallbacks, else ``skip``.

    The whole measurement, fallbacks included, fits in one ``--timeout``: the report waits for
    it, and when DNS or the network is down every attempt would otherwise cost a timeout.
    """
    started = time.monotonic()
    end = started + config.timeout
    log: list[str] = []
    tried: list[str] = []
    fallbacks = web_hosts(provider, targets)[:MAX_WEB_ATTEMPTS]
    try:
        host, port = parse_time_server(config.time_server)
        # with a fallback to try, SNTP takes half the budget at most and leaves it the rest
        share = config.timeout / 2 if fallbacks else config.timeout
        reading = sntp_query(
            host, port, timeout=min(share, SNTP_WAIT), now=now, dns=dns, transcript=log
        )
        return judge_clock(
            reading, transcript=tuple(log), duration_ms=int((time.monotonic() - started) * 1000)
        )
    except ClockError as exc:
        tried.append(str(exc))
        log.append(f"-- {exc} --")
    for web_host, web_port in fallbacks:
        left = end - time.monotonic()
        if left < 0.05:
            tried.append(f"https-date:{web_host}: not tried, the clock check's time is up")
            break
        try:
            reading = https_date(
                web_host,
                web_port,
                timeout=left,
                now=now,
                ca_file=config.ca_file,
                dns=dns,
                transcript=log,
            )
        except ClockError as exc:
            tried.append(str(exc))
            log.append(f"-- {exc} --")
            continue
        return judge_clock(
            reading,
            transcript=tuple(log),
            tried=tried,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    # what was asked, for a translation; ``tried`` is the English reasons JSON shows
    sources = [f"{config.time_server or DEFAULT_TIME_SERVER} (SNTP)"]
    sources += [f"{web_host} (HTTPS)" for web_host, _ in fallbacks]
    return Observation(
        "clock",
        Status.SKIP,
        Summary("clock.no_reference", {"tried": "; ".join(tried), "sources": ", ".join(sources)}),
        None,
        {"unavailable": tried},
        (),
        tuple(log),
        int((time.monotonic() - started) * 1000),
    )


def observe(
    config: RunConfig,
    *,
    now: Callable[[], dt.datetime],
    provider: Any,
    targets: Sequence[Target] = (),
    dns: Dns | None = None,
) -> Observation:
    """The ``clock`` check of a run: skipped with ``--no-clock``, else ``measure``d."""
    if not config.check_clock:
        return Observation("clock", Status.SKIP, Summary("clock.disabled"))
    return measure(config, now=now, provider=provider, targets=targets, dns=dns)


# -- certificates judged by both clocks ---------------------------------------------------------


def valid_by_reference(tls: TlsFacts, offset: float) -> bool | None:
    """Whether every certificate judged is inside its window by the reference clock (the
    time it was judged at, minus ``offset``); None when there is nothing to judge."""
    if not tls.windows:
        return None
    reference = tls.checked_at - dt.timedelta(seconds=offset)
    return all(nb <= reference <= na for nb, na in tls.windows)


def reconcile(observations: Sequence[Observation]) -> list[Observation]:
    """Rewrite expiry failures that the local clock alone explains into ``tls.clock_skew``."""
    clock = next(
        (o.facts for o in observations if o.check == "clock" and isinstance(o.facts, ClockFacts)),
        None,
    )
    if clock is None:
        return list(observations)
    out: list[Observation] = []
    for obs in observations:
        if (
            isinstance(obs.facts, TlsFacts)
            and any(p.signal in EXPIRY_SIGNALS for p in obs.problems)
            and valid_by_reference(obs.facts, clock.offset_seconds)
        ):
            obs = _as_clock_skew(obs, clock)
        out.append(obs)
    return out


def _as_clock_skew(obs: Observation, clock: ClockFacts) -> Observation:
    offset = clock.offset_seconds
    params = skew_params(offset, clock.source)
    problems = tuple(
        Problem("tls.clock_skew", p.text, {**p.params, **params, "reference": clock.reference})
        if p.signal in EXPIRY_SIGNALS
        else p
        for p in obs.problems
    )
    data = dict(obs.data, valid_by_reference_clock=True, clock_offset_seconds=round(offset, 3))
    summary = Summary(
        "tls.clock_ahead" if offset > 0 else "tls.clock_behind",
        {"source": clock.source, "offset_human": params["offset_human"]},
    )
    return replace(obs, summary=summary, data=data, problems=problems)
