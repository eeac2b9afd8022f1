"""``maildiag check`` end to end against loopback peers: JSON (golden), text, exit codes."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, run_cli
from peers import Certs, LineServer

GOLDEN = Path(__file__).parent / "golden"


def check(*args: str, env: dict[str, str] | None = None) -> CliResult:
    return run_cli("check", "alice@example.test", "--no-clock", "--timeout", "3", *args, env=env)


def normalise(report: dict[str, Any]) -> dict[str, Any]:
    """Replace what differs between runs (ports, times, dates, peer banners) by placeholders."""
    text = json.dumps(report, sort_keys=True)
    text = re.sub(r'"duration_ms": \d+', '"duration_ms": 0', text)
    text = re.sub(r'"ms": \d+', '"ms": 0', text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r'"port": \d+', '"port": 0', text)
    text = re.sub(r"(port|порт[уа]?) \d+", r"\1 PORT", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?", "DATE", text)
    text = re.sub(r"Testing (CA|cert) #[\w-]+", r"Testing \1 #ID", text)
    text = re.sub(r"valid for \d+ days", "valid for N days", text)
    text = re.sub(r'"days_to_expiry": \d+', '"days_to_expiry": 0', text)
    text = re.sub(r'"resolver": "[^"]*"', '"resolver": "R"', text)
    text = re.sub(r'"cipher": "[^"]*"', '"cipher": "C"', text)
    text = re.sub(r"Python SMTP [\d.]+", "Python SMTP V", text)
    return json.loads(text)


def assert_golden(name: str, report: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    got = normalise(report)
    if os.environ.get("MAILDIAG_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    expected = json.loads(path.read_text())
    assert got == expected, f"{name}: JSON differs from {path} (MAILDIAG_UPDATE_GOLDEN=1 rewrites)"


@pytest.fixture
def three(
    smtp_server: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    pop3_server: Callable[..., LineServer],
    certs: Certs,
) -> list[str]:
    smtp = smtp_server("ssl")
    imap = imap_server(starttls=certs.valid)
    pop = pop3_server(implicit_tls=True)
    return [
        "--smtp",
        f"127.0.0.1:{smtp.port}/ssl",
        "--imap",
        f"127.0.0.1:{imap.port}/starttls",
        "--pop3",
        f"127.0.0.1:{pop.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
    ]


def test_three_healthy_services_json_golden(three: list[str]) -> None:
    result = check(*three, "--json")
    assert result.code == 0, result.err
    report = result.json
    assert report["schema"] == "maildiag.report/1"
    assert (report["status"], report["exit_code"]) == ("ok", 0)
    assert report["discovery"] == {"source": "explicit", "provider": None}
    ids = [c["id"] for c in report["checks"]]
    assert ids[:2] == ["dns", "clock"]
    for svc in ("smtp", "imap", "pop3"):
        for stage in ("connect", "greeting", "tls", "capabilities", "auth"):
            assert f"{svc}.{stage}" in ids
    assert_golden("three-healthy", report)


def test_failing_checks_json_golden(
    smtp_server: Callable[..., Any], certs: Certs, closed_port: int
) -> None:
    expired = smtp_server("ssl", tls=certs.expired)
    result = check(
        "--smtp",
        f"127.0.0.1:{expired.port}/ssl",
        "--imap",
        f"127.0.0.1:{closed_port}/ssl",
        "--only",
        "smtp,imap",
        "--ca-file",
        str(certs.ca_pem),
        "--json",
        "--no-alternatives",  # the standard ports on 127.0.0.1 are the machine's, not the test's
    )
    assert result.code == 2
    report = result.json
    assert (report["status"], report["exit_code"]) == ("fail", 2)
    categories = [f["category"] for f in report["findings"]]
    assert "cert_expired" in categories and "connection_refused" in categories
    for finding in report["findings"]:
        assert set(finding) == {
            "rule",
            "category",
            "severity",
            "check",
            "title",
            "steps",
            "evidence",
        }
        assert finding["title"] and finding["steps"]
    assert_golden("expired-and-refused", report)


def test_exit_code_1_for_a_warning_and_fail_on_warn(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    soon = smtp_server("ssl", tls=certs.expiring(12))
    args = [
        "--smtp",
        f"127.0.0.1:{soon.port}/ssl",
        "--only",
        "smtp",
        "--ca-file",
        str(certs.ca_pem),
        "--json",
    ]
    result = check(*args)
    assert (result.code, result.json["status"], result.json["exit_code"]) == (1, "warn", 1)
    strict = check(*args, "--fail-on", "warn")
    assert (strict.code, strict.json["status"], strict.json["exit_code"]) == (2, "warn", 2)


def test_mode_mismatch_names_the_real_mode(smtp_server: Callable[..., Any], certs: Certs) -> None:
    starttls = smtp_server("starttls")
    result = check(
        "--smtp",
        f"127.0.0.1:{starttls.port}/ssl",
        "--only",
        "smtp",
        "--ca-file",
        str(certs.ca_pem),
        "--json",
    )
    assert result.code == 2
    finding = next(f for f in result.json["findings"] if f["check"] == "smtp.greeting")
    assert finding["category"] == "tls_mismatch"
    assert "STARTTLS" in finding["title"].upper()


def test_text_output_in_both_languages(three: list[str]) -> None:
    en = check(*three)
    assert en.code == 0
    assert "TLSv1" in en.out and en.out.splitlines()[-1] == "Everything checked is fine."
    assert "smtp.tls" not in en.out  # check ids are for --verbose
    ru = check(*three, "--lang", "ru")
    assert ru.out.splitlines()[-1] == "Всё проверенное в порядке."


def test_text_findings_carry_steps(certs: Certs, closed_port: int) -> None:
    result = check("--smtp", f"127.0.0.1:{closed_port}/ssl", "--only", "smtp")
    assert result.code == 2
    assert "1)" in result.out and "connection_refused" not in result.out
    verbose = check("--smtp", f"127.0.0.1:{closed_port}/ssl", "--only", "smtp", "--verbose")
    assert "category connection_refused" in verbose.out and "smtp.connect" in verbose.out


def test_transcript_in_json_and_text(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("starttls")
    args = [
        "--smtp",
        f"127.0.0.1:{server.port}/starttls",
        "--only",
        "smtp",
        "--ca-file",
        str(certs.ca_pem),
        "--transcript",
    ]
    report = check(*args, "--json").json
    greeting = next(c for c in report["checks"] if c["id"] == "smtp.greeting")
    assert any(line.startswith("S: 220") for line in greeting["transcript"])
    tls = next(c for c in report["checks"] if c["id"] == "smtp.tls")
    assert any("TLS established" in line for line in tls["transcript"])
    assert "C: STARTTLS" in check(*args).out
    plain = check(*args[:-1], "--json").json
    assert "transcript" not in plain["checks"][0]


def test_dead_resolver_is_said_plainly_and_costs_one_timeout() -> None:
    """No network: the DNS server never answers. One clear finding, exit 2, no hang."""
    import socket
    import time

    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 0))  # reads nothing, answers nothing
    silent_ntp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent_ntp.bind(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        result = run_cli(
            "check",
            "user@yandex.ru",
            "--timeout",
            "2",
            "--json",
            "--resolver",
            f"127.0.0.1:{blackhole.getsockname()[1]}",
            "--time-server",
            f"127.0.0.1:{silent_ntp.getsockname()[1]}",
        )
        elapsed = time.monotonic() - started
    finally:
        blackhole.close()
        silent_ntp.close()
    assert result.code == 2 and "Traceback" not in result.err
    report = result.json
    assert report["discovery"] == {"source": "provider", "provider": "yandex"}
    first = report["findings"][0]
    assert (first["rule"], first["category"], first["check"]) == (
        "dns.timeout",
        "dns_failure",
        "dns",
    )
    assert "did not answer" in next(c for c in report["checks"] if c["id"] == "dns")["summary"]
    assert elapsed < 4, f"one timeout (2 s), not one per lookup: took {elapsed:.1f} s"


def test_resolver_denying_a_known_provider_is_called_broken() -> None:
    """A resolver that answers NXDOMAIN for yandex.ru (captive portal, filter, no network) is
    the user's DNS problem, not a typo: one finding, shared by the dns and connect checks."""
    from dnsserver import DnsServer

    with DnsServer({}) as server:  # every name: NXDOMAIN
        result = run_cli(
            "check",
            "user@yandex.ru",
            "--no-clock",
            "--timeout",
            "2",
            "--json",
            "--resolver",
            server.address,
        )
    assert result.code == 2
    report = result.json
    rules = {f["rule"] for f in report["findings"]}
    assert rules == {"dns.resolver-broken"}, rules
    checks = {f["check"] for f in report["findings"]}
    assert checks == {"dns", "smtp.connect", "imap.connect", "pop3.connect"}
    assert "yandex.ru" in report["findings"][0]["title"]


def test_explicit_server_on_a_domain_that_does_not_exist(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    """SPEC: with explicit servers the dns check only establishes that their names resolve; the
    other services, when --only asks for them too, are looked for, and finding none is not a
    failure of the server named."""
    from dnsserver import DnsServer

    server = smtp_server("ssl")
    with DnsServer({}) as dns:  # example.test: NXDOMAIN
        result = check(
            "--smtp",
            f"127.0.0.1:{server.port}/ssl",
            "--only",
            "smtp,imap,pop3",
            "--ca-file",
            str(certs.ca_pem),
            "--resolver",
            dns.address,
            "--json",
        )
    assert result.code == 0, result.out
    report = result.json
    assert [s["service"] for s in report["servers"]] == ["smtp"]
    dns_check = next(c for c in report["checks"] if c["id"] == "dns")
    assert dns_check["status"] == "ok" and dns_check["data"]["discovery_problems"] == [
        "dns.nxdomain"
    ]
    assert report["findings"] == [] or all(f["severity"] == "info" for f in report["findings"])
    assert ("example.test", "MX") in dns.queries  # asked for: the other services were looked for


def test_explicit_servers_alone_cause_no_lookup_of_the_domain(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    """Issue 15 item 8: with every wanted service given, nothing about the address's domain
    leaves the machine; only the named servers' own names are resolved."""
    from dnsserver import DnsServer

    server = smtp_server("ssl")
    with DnsServer({"relay.test": {"A": ["127.0.0.1"]}}) as dns:
        result = check(
            "--smtp",
            f"relay.test:{server.port}/ssl",
            "--ca-file",
            str(certs.ca_pem),
            "--resolver",
            dns.address,
            "--json",
        )
        asked = {name for name, _ in dns.queries}
    assert [s["service"] for s in result.json["servers"]] == ["smtp"]
    assert result.json["discovery"]["source"] == "explicit"
    assert asked == {"relay.test"}, asked  # no example.test, no SRV, no autoconfig, no guesses
