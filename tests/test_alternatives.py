"""A configuration that works: when a server fails, ``check`` tries the provider's other servers
and the standard other port of the service, and reports what this run proved to work
(``recommended``, "Settings that work"); when every mail port of a host times out, port 443 tells
a network that blocks mail ports from a host that is down.

The standard ports (465, 587, 443 ...) live on loopback test ports: the run's resolver (the test
DNS server) carries a ``port_map`` that ``net.connect`` follows, so the report still speaks of 465
and 587. The server name mail.example.test (the test certificates carry it) resolves to
127.0.0.1; nothing leaves the loopback.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dnsserver
import pytest
from peers import Certs, FilteredPort, LineServer, free_port

from maildiag.alternatives import Candidate, Finder
from maildiag.config import RunConfig
from maildiag.dnsclient import Dns
from maildiag.models import Recommended, Report, Security, Service, Source, Target
from maildiag.pipeline import check_mailbox
from maildiag.report.text import render_text
from maildiag.rulebase import RuleBase

dns_zone = dnsserver.dns_zone

ALICE = "alice@example.test"
HOST = "mail.example.test"
ZONE = {HOST: {"A": ["127.0.0.1"]}, "example.test": {"MX": [f"10 {HOST}."]}}
PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load(cache=False)


def smtp_target(port: int, security: Security) -> Target:
    return Target(Service.SMTP, HOST, port, security, Source.EXPLICIT)


def check(
    zone: Any,
    certs: Certs,
    rules: RuleBase,
    port_map: Mapping[int, int],
    *,
    explicit: tuple[Target, ...] = (),
    only: frozenset[Service] = frozenset({Service.SMTP}),
    **config: Any,
) -> Report:
    cfg = RunConfig(
        ALICE,
        explicit=explicit,
        only=only,
        ca_file=str(certs.ca_pem),
        check_clock=False,
        timeout=config.pop("timeout", 2.0),
        **config,
    )
    dns = Dns(zone.address, timeout=2, port_map=port_map)
    return check_mailbox(cfg, rules=rules, dns=dns)


def text(report: Report, rules: RuleBase, lang: str = "en") -> str:
    out = io.StringIO()
    render_text(report, lang=lang, out=out, width=None, rules=rules)
    return out.getvalue()


def by_id(report: Report) -> dict[str, Any]:
    return {c.id: c for c in report.checks}


# -- which alternatives ---


def _no_job(target: Target) -> Any:
    raise AssertionError("candidates() starts nothing")


def test_candidates_come_from_the_source_then_the_standard_port_never_twice() -> None:
    primary = smtp_target(465, Security.SSL)
    imap = Target(Service.IMAP, HOST, 993, Security.SSL, Source.EXPLICIT)
    provider_587 = Target(Service.SMTP, HOST, 587, Security.STARTTLS, Source.PROVIDER)
    other_host = Target(Service.SMTP, "smtp2.example.test", 465, Security.SSL, Source.PROVIDER)
    finder = Finder([primary, imap], {Service.SMTP: [provider_587, other_host]}, _no_job)
    found = finder.candidates(primary)
    assert found == [Candidate(provider_587, "provider"), Candidate(other_host, "provider")]
    # from a port that is neither standard one, both standard ports, implicit TLS first
    odd = smtp_target(2525, Security.STARTTLS)
    assert [
        (c.target.port, c.target.security, c.origin)
        for c in Finder([odd], {}, _no_job).candidates(odd)
    ] == [
        (465, Security.SSL, "standard"),
        (587, Security.STARTTLS, "standard"),
    ]
    # a name that does not resolve: its other ports are not worth a try
    assert finder.candidates(primary, same_host=False) == [Candidate(other_host, "provider")]


# -- 465 closed, 587 works ---


def test_465_refused_587_works_is_recommended_and_named_in_the_findings(
    dns_zone: Callable[..., Any],
    smtp_server: Callable[..., Any],
    certs: Certs,
    rules: RuleBase,
) -> None:
    submission = smtp_server("starttls")
    closed = free_port()
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: closed, 587: submission.port},
        explicit=(smtp_target(465, Security.SSL),),
    )
    checks = by_id(report)
    assert checks["smtp.connect"].status == "fail"  # what the user configured does not work
    assert int(report.exit_code) == 2
    [finding] = checks["smtp.connect"].findings
    assert finding.category == "connection_refused"
    assert f"{HOST}:587 STARTTLS" in finding.steps[0]
    assert report.recommended == (Recommended(Service.SMTP, HOST, 587, Security.STARTTLS, ALICE),)
    [alt] = report.alternatives
    assert (alt.target.port, alt.target.security, alt.origin, alt.works) == (
        587,
        Security.STARTTLS,
        "standard",
        True,
    )
    assert {c.id: c.status for c in alt.checks}["smtp.tls"] == "ok"
    data = json.loads(json.dumps(report.to_json()))
    assert data["recommended"] == [
        {"service": "smtp", "host": HOST, "port": 587, "security": "starttls", "login": ALICE}
    ]
    assert data["alternatives"][0]["works"] is True
    assert [f["rule"] for f in data["findings"]] == ["net.connection-refused"]
    shown = text(report, rules)
    tail = shown[shown.index("Settings that work") :]
    assert f"SMTP  {HOST}:587 STARTTLS Login: {ALICE}" in tail
    ru_report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: closed, 587: submission.port},
        explicit=(smtp_target(465, Security.SSL),),
        lang="ru",
    )
    ru = text(ru_report, rules, "ru")
    assert "Работающие настройки" in ru and f"SMTP  {HOST}:587 STARTTLS Логин: {ALICE}" in ru
    assert f"С другими настройками maildiag подключился: {HOST}:587 STARTTLS" in ru


def test_a_port_in_the_other_mode_is_the_recommendation_without_more_connections(
    dns_zone: Callable[..., Any], smtp_server: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    """465 set up as STARTTLS, but it speaks implicit TLS: 465 SSL/TLS is what works."""
    implicit = smtp_server("ssl")
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: implicit.port},
        explicit=(smtp_target(465, Security.STARTTLS),),
    )
    greeting = by_id(report)["smtp.greeting"]
    assert greeting.status == "fail"
    assert f"{HOST}:465 SSL/TLS" in greeting.findings[0].steps[0]
    assert report.recommended == (Recommended(Service.SMTP, HOST, 465, Security.SSL, ALICE),)
    assert report.alternatives == ()


def test_a_working_server_is_recommended_and_nothing_else_is_tried(
    dns_zone: Callable[..., Any], smtp_server: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    submission = smtp_server("starttls")
    closed = free_port()
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {587: submission.port, 465: closed},
        explicit=(smtp_target(587, Security.STARTTLS),),
    )
    assert report.status == "ok"
    assert report.recommended == (Recommended(Service.SMTP, HOST, 587, Security.STARTTLS, ALICE),)
    assert report.alternatives == ()


def test_nothing_works_no_recommendation_and_what_was_tried_is_said(
    dns_zone: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: free_port(), 587: free_port()},
        explicit=(smtp_target(465, Security.SSL),),
    )
    assert report.recommended == ()
    [alt] = report.alternatives
    assert alt.works is False and alt.target.port == 587
    # the alternative's failure is not a finding of the configured server
    assert [f.check for f in report.findings] == ["smtp.connect"]
    assert "Settings" not in report.findings[0].steps[0]
    shown = text(report, rules)
    assert "SMTP  ✖ nothing that works was found" in shown
    assert f"also tried: SMTP {HOST}:587 STARTTLS: connect: connection refused" in shown


def test_no_alternatives_when_asked(
    dns_zone: Callable[..., Any], smtp_server: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    submission = smtp_server("starttls")
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: free_port(), 587: submission.port},
        explicit=(smtp_target(465, Security.SSL),),
        alternatives=False,
    )
    assert report.alternatives == () and report.recommended == ()
    assert len(report.findings[0].steps) == 2  # the rule's own steps only


# -- the provider's alternative, and the one login ---


@pytest.fixture
def provider_rules(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "rules" / "providers"
    folder.mkdir(parents=True)
    (folder / "example-test.yaml").write_text(
        "id: example-test\n"
        "name: Example Test Mail\n"
        "domains: [example.test]\n"
        "login: address\n"
        "servers:\n"
        "  smtp:\n"
        f"    - {{host: {HOST}, port: 465, security: ssl}}\n"
        f"    - {{host: {HOST}, port: 2587, security: starttls}}\n"
        "notes: {en: [Test entry.], ru: [Тестовая запись.]}\n"
        "links: [https://example.test/help]\n"
    )
    yield str(tmp_path / "rules")


def test_the_provider_alternative_logs_in_once_when_the_configured_server_cannot(
    dns_zone: Callable[..., Any],
    smtp_peers: Callable[..., Any],
    certs: Certs,
    provider_rules: str,
    rules: RuleBase,
) -> None:
    """465 has a certificate nobody trusts: the password does not go there, so the provider's
    587 gets the run's one login of SMTP, and that is what works."""
    from aiosmtpd.handlers import Sink

    untrusted = smtp_peers(
        Sink(), mode="ssl", users={ALICE: PASSWORD}, ssl_context=certs.self_signed
    )
    good = smtp_peers(Sink(), mode="starttls", users={ALICE: PASSWORD})
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: untrusted.port, 2587: good.port, 587: free_port()},
        password=PASSWORD,
        rules_dirs=(provider_rules,),  # the provider database reads its providers/ folder
    )
    assert report.discovery.provider == "example-test"
    checks = by_id(report)
    assert checks["smtp.tls"].status == "fail"
    assert checks["smtp.auth"].status == "skip"
    assert report.recommended == (Recommended(Service.SMTP, HOST, 2587, Security.STARTTLS, ALICE),)
    tried = {a.target.port: a for a in report.alternatives}
    assert tried[2587].origin == "provider" and tried[2587].works
    auth = {c.id: c for c in tried[2587].checks}["smtp.auth"]
    assert auth.summary == f"logged in as {ALICE} with AUTH PLAIN"
    assert "AUTH" not in untrusted.commands()  # the password never went to the untrusted server
    assert good.commands().count("AUTH") == 1


def test_a_refused_login_on_the_alternative_is_the_accounts_finding(
    dns_zone: Callable[..., Any], smtp_peers: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    from aiosmtpd.handlers import Sink

    good = smtp_peers(Sink(), mode="starttls", users={ALICE: "another"})
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: free_port(), 587: good.port},
        explicit=(smtp_target(465, Security.SSL),),
        password=PASSWORD,
    )
    assert report.recommended == ()
    assert "smtp.auth" in [f.check for f in report.findings]
    assert any(f.category == "auth_failed" for f in report.findings)
    assert good.commands().count("AUTH") == 1


# -- blocked mail ports or a host that is down ---


@pytest.fixture
def filtered() -> Iterator[Callable[[], FilteredPort]]:
    made: list[FilteredPort] = []

    def make() -> FilteredPort:
        port = FilteredPort()
        assert port.verify()
        made.append(port)
        return port

    yield make
    for port in made:
        port.close()


def test_mail_ports_filtered_but_443_answers_is_a_blocked_network(
    dns_zone: Callable[..., Any],
    line_server: Callable[..., LineServer],
    filtered: Callable[[], FilteredPort],
    certs: Certs,
    rules: RuleBase,
) -> None:
    web = line_server(lambda peer: None)  # accepts, says nothing: a TCP answer is all we ask
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: filtered().port, 587: filtered().port, 443: web.port},
        explicit=(smtp_target(465, Security.SSL),),
        timeout=1.0,
    )
    connect = by_id(report)["smtp.connect"]
    assert connect.observation.data["https_probe"] == {"port": 443, "result": "connected"}
    assert [a["result"] for a in connect.observation.data["addresses"]] == ["timeout"]
    [finding] = connect.findings
    assert (finding.rule, finding.category) == ("net.ports-blocked", "connection_timeout")
    assert "465, 587" in finding.title
    assert web.connections == 1 and web.received == []  # one connection, nothing sent
    [alt] = report.alternatives
    alt_connect = {c.id: c for c in alt.checks}["smtp.connect"]
    assert alt_connect.findings[0].rule == "net.ports-blocked"


def test_mail_ports_and_443_filtered_is_a_host_that_is_down(
    dns_zone: Callable[..., Any],
    filtered: Callable[[], FilteredPort],
    certs: Certs,
    rules: RuleBase,
) -> None:
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: filtered().port, 587: filtered().port, 443: filtered().port},
        explicit=(smtp_target(465, Security.SSL),),
        timeout=1.0,
        lang="ru",
    )
    connect = by_id(report)["smtp.connect"]
    assert connect.observation.data["https_probe"] == {"port": 443, "result": "timeout"}
    assert [f.rule for f in connect.findings] == ["net.host-down"]
    assert "не отвечает совсем" in text(report, rules, "ru")


def test_one_mail_port_is_not_enough_to_blame_the_network(
    dns_zone: Callable[..., Any],
    line_server: Callable[..., LineServer],
    filtered: Callable[[], FilteredPort],
    certs: Certs,
    rules: RuleBase,
) -> None:
    """A server may simply drop a port it does not offer: with one port tried (no
    alternatives), the timeout stays a timeout."""
    web = line_server(lambda peer: None)
    report = check(
        dns_zone(ZONE),
        certs,
        rules,
        {465: filtered().port, 443: web.port},
        explicit=(smtp_target(465, Security.SSL),),
        timeout=1.0,
        alternatives=False,
    )
    connect = by_id(report)["smtp.connect"]
    assert [f.rule for f in connect.findings] == ["net.connection-timeout-smtp"]


# -- a domain whose only server is its MX host ---


def test_the_whole_check_of_a_domain_served_by_its_mx_host_alone(
    dns_zone: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    certs: Certs,
    rules: RuleBase,
) -> None:
    """small.test publishes nothing but an MX record; its MX host serves IMAP on 993. Discovery
    finds it by probing (a guess), the check passes, and it is the recommended IMAP server."""
    imaps = imap_server(implicit_tls=True)
    zone = dns_zone({"small.test": {"MX": [f"10 {HOST}."]}, HOST: {"A": ["127.0.0.1"]}})
    closed = {port: free_port() for port in (465, 587, 143, 995, 110, 443)}
    cfg = RunConfig("bob@small.test", ca_file=str(certs.ca_pem), check_clock=False, timeout=2)
    dns = Dns(zone.address, timeout=2, port_map={**closed, 993: imaps.port})
    report = check_mailbox(cfg, rules=rules, dns=dns)
    assert report.discovery.source == "guess"
    assert [(t.service, t.host, t.port) for t in report.servers] == [(Service.IMAP, HOST, 993)]
    assert {c.id: c.status for c in report.checks if c.id.startswith("imap.")} == {
        "imap.connect": "ok",
        "imap.greeting": "ok",
        "imap.tls": "ok",
        "imap.capabilities": "ok",
        "imap.auth": "skip",
    }
    assert report.recommended == (
        Recommended(Service.IMAP, HOST, 993, Security.SSL, "bob@small.test"),
    )
