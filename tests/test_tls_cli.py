"""``maildiag check`` end to end on loopback: clock skew, interception and expiry as the user
sees them (JSON findings, exit codes). The reference clock is always a loopback SNTP peer."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import CliResult, run_cli
from peers import Certs
from sntp import SntpPeer

DAY = 86400.0


@pytest.fixture
def ntp() -> Iterator[Callable[..., SntpPeer]]:
    peers: list[SntpPeer] = []

    def make(**kw: Any) -> SntpPeer:
        peers.append(SntpPeer(**kw))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def check(port: int, certs: Certs, *extra: str, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(
        "check",
        "a@example.test",
        "--smtp",
        f"127.0.0.1:{port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--only",
        "smtp",
        "--timeout",
        "3",
        "--json",
        *extra,
        env=env,
    )


def categories(result: CliResult, check_id: str | None = None) -> list[str]:
    return [
        f["category"] for f in result.json["findings"] if check_id is None or f["check"] == check_id
    ]


def test_clock_skew_not_cert_expired(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer]
) -> None:
    server = smtp_server("ssl", tls=certs.not_yet_valid)  # valid from 3 days on, by our clock
    peer = ntp(shift=3.5 * DAY)
    result = check(server.port, certs, "--time-server", peer.address)
    assert result.code == 2, result.err
    report = result.json
    assert report["status"] == "fail" and report["exit_code"] == 2
    assert categories(result, "smtp.tls") == ["clock_skew"]
    assert categories(result, "clock") == ["clock_skew"]
    assert "cert_expired" not in categories(result)
    tls_finding = next(f for f in report["findings"] if f["check"] == "smtp.tls")
    assert "3 days 12 hours behind" in tls_finding["title"]
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["clock"]["data"]["source"] == f"sntp:{peer.address}"
    assert checks["smtp.tls"]["data"]["verify_code"] == 9
    assert checks["smtp.tls"]["data"]["valid_by_reference_clock"] is True


def test_without_the_clock_it_is_cert_expired(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    server = smtp_server("ssl", tls=certs.not_yet_valid)
    result = check(server.port, certs, "--no-clock")
    assert result.code == 2
    assert categories(result, "smtp.tls") == ["cert_expired"]
    checks = {c["id"]: c for c in result.json["checks"]}
    assert checks["clock"]["status"] == "skip"


def test_interception_not_cert_untrusted(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer], tmp_path: Path
) -> None:
    av = trustme.CA(
        organization_name="AO Kaspersky Lab",
        organization_unit_name="Kaspersky Anti-Virus Personal Root Certificate",
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    av.issue_cert("127.0.0.1").configure_cert(ctx)
    server = smtp_server("ssl", tls=ctx)
    bundle = tmp_path / "system-roots.pem"  # the antivirus installed its root in the OS store
    av.cert_pem.write_to_path(str(bundle))
    result = check(
        server.port,
        certs,
        "--time-server",
        ntp().address,
        env={"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "none")},
    )
    assert result.code == 2, result.err
    assert categories(result, "smtp.tls") == ["tls_interception"]
    assert "cert_untrusted" not in categories(result)
    finding = next(f for f in result.json["findings"] if f["check"] == "smtp.tls")
    assert finding["title"].startswith("Kaspersky ") and "Kaspersky" in finding["evidence"]
    tls = next(c for c in result.json["checks"] if c["id"] == "smtp.tls")
    seen = tls["data"]["interception"]
    assert "Kaspersky Anti-Virus Personal Root Certificate" in seen["issuer"]
    assert seen["product"] == "Kaspersky" and seen["product_known"] is True, (
        "named by rules/interception.yaml"
    )


def test_corporate_proxy_trusted_by_the_os_is_interception(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer], tmp_path: Path
) -> None:
    proxy = trustme.CA(
        organization_name="Example Corp", organization_unit_name="Egress Inspection CA"
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    proxy.issue_cert("127.0.0.1").configure_cert(ctx)
    server = smtp_server("ssl", tls=ctx)
    bundle = tmp_path / "system-roots.pem"
    proxy.cert_pem.write_to_path(str(bundle))
    result = check(
        server.port,
        certs,
        "--time-server",
        ntp().address,
        env={"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "none")},
    )
    assert categories(result, "smtp.tls") == ["tls_interception"]
    assert "cert_untrusted" not in categories(result)
    tls = next(c for c in result.json["checks"] if c["id"] == "smtp.tls")
    assert tls["data"]["os_store"]["verified"] is True
    assert tls["data"]["interception"]["product"] == "Example Corp"


def test_untrusted_without_os_trust_stays_untrusted(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer], tmp_path: Path
) -> None:
    server = smtp_server("ssl", tls=certs.self_signed)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    result = check(
        server.port,
        certs,
        "--time-server",
        ntp().address,
        env={"SSL_CERT_FILE": str(empty), "SSL_CERT_DIR": str(tmp_path / "none")},
    )
    assert categories(result, "smtp.tls") == ["cert_untrusted"]


def test_expiry_warning_exits_1(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer]
) -> None:
    server = smtp_server("ssl", tls=certs.expiring(10))
    result = check(server.port, certs, "--time-server", ntp().address)
    assert result.code == 1, result.out + result.err
    report = result.json
    assert report["status"] == "warn" and report["exit_code"] == 1
    (finding,) = [f for f in report["findings"] if f["check"] == "smtp.tls"]
    assert finding["severity"] == "warn" and "10 days" in finding["title"]
    assert all(f["severity"] != "fail" for f in report["findings"])
    clock = next(c for c in report["checks"] if c["id"] == "clock")
    assert clock["status"] == "ok"


def test_expiry_inside_crit_days_fails(
    smtp_server: Callable[..., Any], certs: Certs, ntp: Callable[..., SntpPeer]
) -> None:
    server = smtp_server("ssl", tls=certs.expiring(10))
    result = check(
        server.port, certs, "--time-server", ntp().address, "--warn-days", "30", "--crit-days", "14"
    )
    assert result.code == 2
    (finding,) = [f for f in result.json["findings"] if f["check"] == "smtp.tls"]
    assert finding["severity"] == "fail"
