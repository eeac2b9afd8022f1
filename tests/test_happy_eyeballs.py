"""Both address families (RFC 8305): ``net.connect`` races IPv6 and IPv4, and ``<svc>.connect``
says when one family fails while the other works.

The server name is in the test DNS server (tests/dnsserver.py) with an A record 127.0.0.1 and an
AAAA record ::1; the mail server listens on 127.0.0.1 only, and the same port on ::1 either
refuses (nothing listens) or drops the connection (``FilteredPort`` on ::1: a full accept queue,
what a firewall's DROP does). Nothing leaves the loopback addresses.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import dnsserver
import pytest
from conftest import run_cli
from peers import Certs, FilteredPort, LineServer, free_port

from maildiag.config import RunConfig
from maildiag.dnsclient import Dns
from maildiag.errors import ConnectFailed
from maildiag.models import Observation, Security, Service, Source, Target
from maildiag.net import ConnectRecord, connect, interleave
from maildiag.pipeline import check_mailbox
from maildiag.rulebase import RuleBase

dns_zone = dnsserver.dns_zone

NAME = "mail.example.test"  # a name the test certificates carry
DUAL = {NAME: {"A": ["127.0.0.1"], "AAAA": ["::1"]}}


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 on this machine")


def test_interleave_puts_ipv6_first_and_alternates() -> None:
    v4, v6 = socket.AF_INET, socket.AF_INET6
    addresses = [(v4, "127.0.0.1"), (v4, "127.0.0.2"), (v6, "::1"), (v6, "::2"), (v6, "::3")]
    assert [ip for _, ip in interleave(addresses)] == [
        "::1",
        "127.0.0.1",
        "::2",
        "127.0.0.2",
        "::3",
    ]
    # the address that answered this run already goes first on a reconnect
    assert [ip for _, ip in interleave(addresses, prefer="127.0.0.2")][:2] == ["127.0.0.2", "::1"]


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load(cache=False)


@pytest.fixture
def imap_v4(imap_server: Callable[..., LineServer]) -> LineServer:
    return imap_server(implicit_tls=True)


@pytest.fixture
def dropped_v6(imap_v4: LineServer) -> Iterator[FilteredPort]:
    filtered = FilteredPort("::1", imap_v4.port)
    assert filtered.verify()
    yield filtered
    filtered.close()


def test_a_dropped_ipv6_address_is_waited_out_beside_the_ipv4_session(
    dns_zone: Callable[..., Any],
    imap_v4: LineServer,
    dropped_v6: FilteredPort,
    certs: Certs,
    rules: RuleBase,
) -> None:
    server = dns_zone(DUAL)
    seen: list[Observation] = []
    config = RunConfig(
        "alice@example.test",
        explicit=(Target(Service.IMAP, NAME, imap_v4.port, Security.SSL, Source.EXPLICIT),),
        only=frozenset({Service.IMAP}),
        ca_file=str(certs.ca_pem),
        check_clock=False,
        timeout=2,
    )
    report = check_mailbox(
        config,
        rules=rules,
        dns=Dns(server.address, timeout=2),
        on_observation=seen.append,
    )
    by_id = {c.id: c for c in report.checks}
    connect_check = by_id["imap.connect"]
    assert connect_check.status == "warn"
    addresses = connect_check.observation.data["addresses"]
    assert [(a["address"], a["family"], a["result"]) for a in addresses] == [
        ("::1", "ipv6", "timeout"),
        ("127.0.0.1", "ipv4", "connected"),
    ]
    assert connect_check.observation.data["address"] == f"127.0.0.1:{imap_v4.port}"
    # the session carried on over IPv4 while the IPv6 attempt ran out: its checks came first
    order = [o.check for o in seen]
    assert order.index("imap.greeting") < order.index("imap.connect")
    assert by_id["imap.tls"].status == "ok" and by_id["imap.capabilities"].status == "ok"
    [finding] = connect_check.findings
    assert (finding.rule, finding.severity, finding.category) == (
        "net.family-timeout",
        "warn",
        "connection_timeout",
    )
    assert "IPv6" in finding.title and "IPv4" in finding.title
    assert f"[::1]:{imap_v4.port}" in finding.title
    assert report.status == "warn" and int(report.exit_code) == 1


def test_a_refusing_ipv6_address_warns_with_exit_code_1(
    dns_zone: Callable[..., Any], imap_v4: LineServer, certs: Certs
) -> None:
    server = dns_zone(DUAL)
    args = ["check", "alice@example.test", "--no-clock", "--timeout", "3"]
    args += ["--resolver", server.address, "--ca-file", str(certs.ca_pem)]
    args += ["--imap", f"{NAME}:{imap_v4.port}/ssl"]
    result = run_cli(*args, "--json")
    assert result.code == 1, result.out + result.err
    report = result.json
    [check] = [c for c in report["checks"] if c["id"] == "imap.connect"]
    assert check["status"] == "warn"
    assert check["summary"] == (
        f"connected to 127.0.0.1:{imap_v4.port}, but IPv6 address [::1]:{imap_v4.port} "
        "refused the connection"
    )
    assert [f["rule"] for f in check["findings"]] == ["net.family-refused"]
    ru = run_cli(*args, "--lang", "ru")
    assert "адрес IPv6 [::1]" in ru.out and "отклонил подключение" in ru.out


def test_one_family_that_works_at_once_needs_no_other(imap_v4: LineServer) -> None:
    """The first address connects before the attempt delay: the other is never tried."""
    record = ConnectRecord()
    conn = connect("127.0.0.1", imap_v4.port, timeout=2, record=record)
    conn.close()
    assert [(a.ip, a.result) for a in record.attempts] == [("127.0.0.1", "connected")]


def test_every_address_failing_raises_the_most_telling_error(
    dns_zone: Callable[..., Any],
) -> None:
    """IPv6 dropped and IPv4 refused: the refusal speaks for the server (a firewall or the host
    answered), and both outcomes are recorded."""
    port = free_port()
    with FilteredPort("::1", port) as filtered:
        assert filtered.verify()
        server = dns_zone(DUAL)
        record = ConnectRecord()
        with pytest.raises(ConnectFailed) as caught:
            connect(NAME, port, timeout=1, dns=Dns(server.address, timeout=1), record=record)
        record.settle()
    assert caught.value.signal == "connect.refused"
    assert [(a.ip, a.result) for a in record.attempts] == [
        ("::1", "timeout"),
        ("127.0.0.1", "refused"),
    ]
