"""The ``clock`` check against loopback reference clocks (an SNTP peer, an HTTPS Date peer), and
``clock.reconcile``: certificates judged by both clocks."""

from __future__ import annotations

import datetime as dt
import email.utils
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import english, render
from peers import Certs, LineServer, PeerConn
from sntp import SntpPeer

from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.probes import clock
from maildiag.probes.session import Env, Session

DAY = 86400.0


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def measure(
    time_server: str | None,
    *,
    timeout: float = 2.0,
    now: Callable[[], dt.datetime] = real_now,
    provider: Any = None,
    ca: str | None = None,
    targets: tuple[Target, ...] = (),
) -> Observation:
    config = RunConfig("a@example.test", time_server=time_server, timeout=timeout, ca_file=ca)
    return clock.measure(config, now=now, provider=provider, targets=targets)


@pytest.fixture
def sntp() -> Any:
    peers: list[SntpPeer] = []

    def make(**kw: Any) -> SntpPeer:
        peer = SntpPeer(**kw)
        peers.append(peer)
        return peer

    yield make
    for p in peers:
        p.close()


# -- formatting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds,en,ru",
    [
        (0.3, "0 seconds", "0 секунд"),
        (1, "1 second", "1 секунду"),
        (61, "1 minute 1 second", "1 минуту 1 секунду"),
        (-1260, "21 minutes", "21 минуту"),
        (7500, "2 hours 5 minutes", "2 часа 5 минут"),
        (3 * DAY + 120, "3 days", "3 дня"),
        (3 * DAY + 5 * 3600, "3 days 5 hours", "3 дня 5 часов"),
        (11 * DAY, "11 days", "11 дней"),
        (22 * 3600, "22 hours", "22 часа"),
    ],
)
def test_humanize(seconds: float, en: str, ru: str) -> None:
    human = clock.humanize(seconds)
    assert (render(human, "en"), render(human, "ru")) == (en, ru)


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, ("pool.ntp.org", 123)),
        ("time.example.test", ("time.example.test", 123)),
        ("127.0.0.1:1123", ("127.0.0.1", 1123)),
        ("[::1]:1123", ("::1", 1123)),
        ("::1", ("::1", 123)),
    ],
)
def test_parse_time_server(spec: str | None, expected: tuple[str, int]) -> None:
    assert clock.parse_time_server(spec) == expected


def test_ntp_era_1_after_2036() -> None:
    # RFC 4330 s.3: a timestamp with its top bit clear is in 2036-2104, not 1900-1968.
    unix = clock._from_ntp(struct.pack("!II", 1000, 0))
    assert dt.datetime.fromtimestamp(unix, dt.UTC).year == 2036


# -- SNTP --------------------------------------------------------------------------------------


def test_in_sync(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp()
    obs = measure(peer.address)
    assert obs.status is Status.OK and not obs.problems
    assert abs(obs.data["offset_seconds"]) < 1
    assert obs.data["source"] == f"sntp:{peer.address}" and obs.data["stratum"] == 2
    request = peer.requests[0]
    assert len(request) == 48 and request[0] == 0x23, "LI 0, version 4, mode 3 (client)"


def test_minutes_ahead_warns(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp(shift=-200)  # the reference is 200 s behind us: our clock is ahead
    obs = measure(peer.address)
    assert obs.status is Status.WARN
    (p,) = obs.problems
    assert p.signal == "clock.skew"
    assert render(p.params["direction"]) == "ahead"
    assert render(p.params["direction"], "ru") == "спешат"
    assert render(p.params["offset_human"]) == "3 minutes 20 seconds"
    assert render(p.params["offset_human"], "ru") == "3 минуты 20 секунд"
    assert 199 <= p.params["offset_seconds"] <= 201
    assert p.params["source"] == f"sntp:{peer.address}"


def test_days_behind_fails(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp(shift=3 * DAY)
    obs = measure(peer.address)
    assert obs.status is Status.FAIL
    p = obs.problems[0].params
    assert render(p["direction"]) == "behind" and render(p["direction"], "ru") == "отстают"
    assert render(p["offset_human"]) == "3 days" and render(p["offset_human"], "ru") == "3 дня"
    assert -3 * DAY - 1 < obs.data["offset_seconds"] < -3 * DAY + 1
    ref = dt.datetime.fromisoformat(obs.data["reference"])
    assert abs((ref - real_now()).total_seconds() - 3 * DAY) < 5


def test_local_clock_is_the_injected_one(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp()
    obs = measure(peer.address, now=lambda: real_now() + dt.timedelta(hours=2))
    assert obs.status is Status.FAIL
    assert 7199 < obs.data["offset_seconds"] < 7201
    assert render(obs.problems[0].params["offset_human"]) == "2 hours"


@pytest.mark.parametrize(
    "kw,reason",
    [
        ({"mode": 3}, "not from a server"),
        ({"stratum": 0}, "kiss-o'-death (RATE)"),
        ({"stratum": 16}, "not synchronised"),
        ({"leap": 3}, "not synchronised"),
        ({"zero_transmit": True}, "no transmit timestamp"),
    ],
)
def test_bad_replies_are_not_believed(
    sntp: Callable[..., SntpPeer], kw: dict[str, Any], reason: str
) -> None:
    peer = sntp(shift=5 * DAY, **kw)
    started = time.monotonic()
    obs = measure(peer.address, timeout=2.0)
    assert obs.status is Status.SKIP and not obs.problems
    assert reason in english(obs)
    assert time.monotonic() - started < 1.9, "a wrong answer ends the wait"


def test_unanswered_query_times_out_after_one_retry(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp(silent=True)
    started = time.monotonic()
    obs = measure(peer.address, timeout=0.6)
    elapsed = time.monotonic() - started
    assert obs.status is Status.SKIP and "no answer within 0.6s" in english(obs)
    assert 0.55 < elapsed < 2.0
    assert len(peer.requests) == 2, "retransmitted once at half the timeout"


def test_reply_not_echoing_our_timestamp_is_ignored(sntp: Callable[..., SntpPeer]) -> None:
    peer = sntp(shift=5 * DAY, echo=False)
    obs = measure(peer.address, timeout=0.6)
    assert obs.status is Status.SKIP, "a stale or spoofed datagram is not a reference"
    assert "does not answer our request" in english(obs)


def test_no_clock_option_skips() -> None:
    config = RunConfig("a@example.test", check_clock=False, time_server="127.0.0.1:9")
    seen: list[Observation] = []
    seen.append(clock.observe(config, now=real_now, provider=None))
    off = "the clock check is off (--no-clock, or clock: false in a targets file)"
    assert [(o.check, o.status, english(o)) for o in seen] == [("clock", Status.SKIP, off)]


# -- HTTPS Date fallback ------------------------------------------------------------------------


@dataclass
class FakeProvider:
    links: tuple[str, ...]


def date_server(
    line_server: Callable[..., LineServer], tls: Any, shift: float, date: bool = True
) -> LineServer:
    def handle(peer: PeerConn) -> None:
        while peer.readline() not in (None, ""):
            pass  # the request and its headers
        stamp = email.utils.formatdate(time.time() + shift, usegmt=True)
        peer.send("HTTP/1.1 301 Moved Permanently")
        if date:
            peer.send(f"Date: {stamp}")
        peer.send("Location: https://www.example.test/")
        peer.send("")

    return line_server(handle, tls=tls)


def test_https_date_when_udp_is_filtered(
    sntp: Callable[..., SntpPeer], line_server: Callable[..., LineServer], certs: Certs
) -> None:
    silent = sntp(silent=True)
    web = date_server(line_server, certs.valid, shift=-2 * 3600)
    provider = FakeProvider((f"https://127.0.0.1:{web.port}/support/mail",))
    obs = measure(silent.address, timeout=0.6, provider=provider, ca=str(certs.ca_pem))
    assert obs.status is Status.FAIL
    assert obs.data["source"] == f"https-date:127.0.0.1:{web.port}"
    assert 7197 < obs.data["offset_seconds"] < 7203, "Date is second-granular"
    assert "no answer" in obs.data["unavailable"][0]
    assert any(line.startswith("C: HEAD / HTTP/1.1") for line in obs.transcript)
    assert render(obs.problems[0].params["direction"]) == "ahead"


def test_https_date_ignores_the_certificate_window(
    sntp: Callable[..., SntpPeer], line_server: Callable[..., LineServer], certs: Certs
) -> None:
    """The local clock is what is in doubt, so an expired certificate still gives a Date."""
    web = date_server(line_server, certs.expired, shift=0)
    provider = FakeProvider((f"https://127.0.0.1:{web.port}/",))
    obs = measure(sntp(silent=True).address, timeout=0.6, provider=provider, ca=str(certs.ca_pem))
    assert obs.status is Status.OK and obs.data["source"].startswith("https-date:")


def test_https_date_needs_a_trusted_chain(
    sntp: Callable[..., SntpPeer], line_server: Callable[..., LineServer], certs: Certs
) -> None:
    web = date_server(line_server, certs.self_signed, shift=5 * DAY)
    no_date = date_server(line_server, certs.valid, shift=0, date=False)
    provider = FakeProvider(
        (
            f"https://127.0.0.1:{web.port}/",
            "http://plain.example.test/",
            f"https://127.0.0.1:{no_date.port}/",
        )
    )
    obs = measure(sntp(silent=True).address, timeout=0.6, provider=provider, ca=str(certs.ca_pem))
    assert obs.status is Status.SKIP and not obs.problems
    unavailable = obs.data["unavailable"]
    assert len(unavailable) == 3
    assert "certificate verify failed" in unavailable[1]
    assert "no Date header" in unavailable[2]


def test_web_hosts_order() -> None:
    provider = FakeProvider(
        (
            "https://help.example.test/x",
            "http://insecure.example.test/",
            "https://help.example.test/y",
            "https://other.example.test:8443/",
        )
    )
    targets = (Target(Service.SMTP, "smtp.example.test", 465, Security.SSL),)
    assert clock.web_hosts(provider, targets) == [
        ("help.example.test", 443),
        ("other.example.test", 8443),
        ("smtp.example.test", 443),
    ]
    assert clock.web_hosts(None, ()) == []
    assert clock.web_hosts(object(), targets) == [("smtp.example.test", 443)]


# -- certificates judged by both clocks ---------------------------------------------------------


def tls_and_clock(
    smtp_server: Callable[..., Any], certs: Certs, tls: Any, peer: SntpPeer | None
) -> list[Observation]:
    server = smtp_server("ssl", tls=tls)
    seen: list[Observation] = []
    config = RunConfig(
        "a@example.test",
        ca_file=str(certs.ca_pem),
        timeout=3.0,
        time_server=peer.address if peer else None,
        check_clock=peer is not None,
    )
    target = Target(Service.SMTP, "127.0.0.1", server.port, Security.SSL)
    Session(target, Env(config, seen.append)).probe()
    seen.append(clock.observe(config, now=real_now, provider=None))
    return clock.reconcile(seen)


def tls_of(observations: list[Observation]) -> Observation:
    return next(o for o in observations if o.check == "smtp.tls")


def test_not_yet_valid_by_local_clock_is_clock_skew(
    smtp_server: Callable[..., Any], certs: Certs, sntp: Callable[..., SntpPeer]
) -> None:
    # The leaf becomes valid in 3 days; the reference clock says it is 3.5 days later than we
    # think: the certificate is fine and our clock is behind.
    tls = tls_of(tls_and_clock(smtp_server, certs, certs.not_yet_valid, sntp(shift=3.5 * DAY)))
    assert [p.signal for p in tls.problems] == ["tls.clock_skew"]
    p = tls.problems[0].params
    assert render(p["direction"]) == "behind" and render(p["offset_human"]) == "3 days 12 hours"
    assert render(p["offset_human"], "ru") == "3 дня 12 часов"
    assert render(p["direction"], "ru") == "отстают"
    assert p["verify_code"] == 9
    assert tls.status is Status.FAIL and tls.data["valid_by_reference_clock"] is True
    assert "behind" in english(tls)


def test_expired_by_local_clock_ahead_is_clock_skew(
    smtp_server: Callable[..., Any], certs: Certs, sntp: Callable[..., SntpPeer]
) -> None:
    # The leaf expired 2 days ago by our clock; by the reference it is 5 days earlier.
    tls = tls_of(tls_and_clock(smtp_server, certs, certs.expired, sntp(shift=-5 * DAY)))
    assert [p.signal for p in tls.problems] == ["tls.clock_skew"]
    assert render(tls.problems[0].params["direction"]) == "ahead"


def test_really_expired_stays_expired(
    smtp_server: Callable[..., Any], certs: Certs, sntp: Callable[..., SntpPeer]
) -> None:
    tls = tls_of(tls_and_clock(smtp_server, certs, certs.expired, sntp()))
    assert [p.signal for p in tls.problems] == ["tls.cert_expired"]
    # A skewed clock that does not reach into the window explains nothing either.
    tls = tls_of(tls_and_clock(smtp_server, certs, certs.expired, sntp(shift=-1 * DAY)))
    assert [p.signal for p in tls.problems] == ["tls.cert_expired"]


def test_without_reference_clock_nothing_is_rewritten(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    observations = tls_and_clock(smtp_server, certs, certs.not_yet_valid, None)
    assert [p.signal for p in tls_of(observations).problems] == ["tls.cert_not_yet_valid"]


def test_reconcile_checks_every_sent_certificate() -> None:
    from maildiag.models import TlsFacts
    from maildiag.probes.tls import _windows

    now = real_now()
    leaf = {
        "position": 0,
        "self_signed": False,
        "not_before": (now + dt.timedelta(days=1)).isoformat(),
        "not_after": (now + dt.timedelta(days=90)).isoformat(),
    }
    mid = dict(leaf, position=1, not_before=(now + dt.timedelta(days=10)).isoformat())
    root = dict(
        leaf, position=2, self_signed=True, not_before=(now + dt.timedelta(days=99)).isoformat()
    )

    def facts(chain: list[dict[str, Any]]) -> TlsFacts:
        return TlsFacts(now, 21, 7, 90, _windows(chain, None))

    assert clock.valid_by_reference(facts([leaf, root]), -2 * DAY) is True, (
        "a sent root is not judged"
    )
    assert clock.valid_by_reference(facts([leaf, mid]), -2 * DAY) is False
    assert clock.valid_by_reference(facts([]), -2 * DAY) is None
