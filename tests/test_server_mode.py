"""``maildiag check HOST[:PORT]``: a mail server checked without a mailbox, as check_smtp -H or
check_ssl_cert -H would, in every output format.

Without a port the run looks at the standard ports of each service (465, 587, 25; 993, 143; 995,
110); they live on loopback test ports through the resolver's ``port_map`` (see
tests/test_alternatives.py). With a port given, the command line alone is enough.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dnsserver
import pytest
from conftest import run_cli
from peers import Certs, LineServer, free_port

from maildiag.config import RunConfig
from maildiag.dnsclient import Dns
from maildiag.models import Recommended, Report, Security, Service
from maildiag.options import server_targets
from maildiag.pipeline import check_mailbox
from maildiag.report.junit import render_junit
from maildiag.report.nagios import render_nagios
from maildiag.report.text import render_text
from maildiag.rulebase import RuleBase
from maildiag.targets import ConfigError, load_targets

dns_zone = dnsserver.dns_zone

HOST = "mail.example.test"


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load(cache=False)


def test_the_standard_ports_of_every_service_or_the_one_given() -> None:
    every = [(str(t.service), t.port, str(t.security)) for t in server_targets(HOST, None)]
    assert every == [
        ("smtp", 465, "ssl"),
        ("smtp", 587, "starttls"),
        ("smtp", 25, "starttls"),
        ("imap", 993, "ssl"),
        ("imap", 143, "starttls"),
        ("pop3", 995, "ssl"),
        ("pop3", 110, "starttls"),
    ]
    only_imap = server_targets(HOST, frozenset({Service.IMAP}))
    assert [t.port for t in only_imap] == [993, 143]
    [one] = server_targets(f"{HOST}:587", None)
    assert (one.service, one.port, one.security) == (Service.SMTP, 587, Security.STARTTLS)
    [odd] = server_targets(f"{HOST}:2526/starttls", frozenset({Service.SMTP}))
    assert (odd.service, odd.port, odd.security) == (Service.SMTP, 2526, Security.STARTTLS)


@pytest.mark.parametrize(
    ("address", "only", "required"),
    [
        (HOST, None, set()),
        (HOST, "pop3,smtp", {Service.POP3, Service.SMTP}),
        (f"{HOST}:995", None, {Service.POP3}),
    ],
)
def test_the_services_that_must_answer(
    address: str, only: str | None, required: set[Service]
) -> None:
    from maildiag.options import CHECK, check_config

    config = check_config(CHECK.checked({"address": address, "only": only}), password=None)
    assert config.server and config.required == required and not config.alternatives


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([f"{HOST}:2526"], "port 2526 is no standard mail port: name its service with --only"),
        ([f"{HOST}:993", "--only", "smtp"], "port 993 is imap's, and --only leaves imap out"),
        ([HOST, "--login", "bob"], f"--login needs a mailbox, and {HOST} is a server"),
        ([HOST, "--password-env", "PW"], "--password-env needs a mailbox"),
        ([HOST, "--smtp", "other.example.test:587"], "--smtp needs a mailbox"),
        ([f"{HOST}:70000"], "port must be a number from 1 to 65535"),
        (["bad_host!.example"], "expected a mail address (name@domain) or a server name"),
    ],
)
def test_what_a_server_check_cannot_take_is_one_line_and_exit_3(args: list[str], says: str) -> None:
    result = run_cli("check", *args, "--no-clock")
    assert result.code == 3 and result.out == ""
    assert result.err.startswith("maildiag: ") and says in result.err
    assert result.err.count("\n") == 1


@pytest.fixture
def server(
    dns_zone: Callable[..., Any],
    smtp_peers: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    certs: Certs,
    rules: RuleBase,
) -> tuple[Report, Any]:
    """mail.example.test offers submission on 587 (STARTTLS, AUTH after it) and IMAP on 993;
    465, 25 and 143 refuse; nothing else is asked for."""
    from test_auth_support import Recording

    submission = smtp_peers(Recording(), mode="starttls", users={"a@example.test": "pw"})
    imaps = imap_server(implicit_tls=True)
    targets = server_targets(HOST, frozenset({Service.SMTP, Service.IMAP}))
    port_map = {587: submission.port, 993: imaps.port}
    port_map |= {p: free_port() for p in (465, 25, 143)}
    config = RunConfig(
        HOST,
        explicit=targets,
        only=frozenset({Service.SMTP, Service.IMAP}),
        ca_file=str(certs.ca_pem),
        check_clock=False,
        timeout=2,
        server=True,
    )
    zone = dns_zone({HOST: {"A": ["127.0.0.1"]}})
    report = check_mailbox(config, rules=rules, dns=Dns(zone.address, timeout=2, port_map=port_map))
    return report, submission


def test_a_healthy_server_on_some_of_its_ports_is_ok(
    server: tuple[Report, Any], rules: RuleBase
) -> None:
    report, submission = server
    assert (report.status, int(report.exit_code)) == ("ok", 0)
    checks = {(c.id, c.observation.target.port): c for c in report.checks if c.observation.target}
    assert checks[("smtp.connect", 465)].status == "skip"
    assert checks[("smtp.connect", 465)].summary.startswith("port 465 not offered: ")
    assert checks[("smtp.tls", 587)].status == "ok"
    auth = checks[("smtp.auth", 587)]
    assert auth.status == "ok" and auth.observation.data["auth_offered"] == ["LOGIN", "PLAIN"]
    assert auth.summary.startswith("AUTH LOGIN PLAIN offered")
    assert checks[("smtp.sender", 587)].status == "skip"
    assert checks[("imap.auth", 993)].status == "skip"
    # no envelope, no message: EHLO, STARTTLS, EHLO, QUIT
    assert submission.commands() == ["EHLO", "STARTTLS", "EHLO", "QUIT"]
    assert report.recommended == (
        Recommended(Service.SMTP, HOST, 587, Security.STARTTLS, None),
        Recommended(Service.IMAP, HOST, 993, Security.SSL, None),
    )
    assert report.alternatives == ()


def test_a_server_check_in_every_format(server: tuple[Report, Any], rules: RuleBase) -> None:
    report, _ = server
    out = io.StringIO()
    render_text(report, out=out, width=None, verbose=True, rules=rules)
    text = out.getvalue()
    assert f" {HOST}: " in text.splitlines()[0]
    assert f"SMTP {HOST}:465 SSL/TLS" in text and f"SMTP {HOST}:587 STARTTLS" in text
    assert "smtp.connect" in text and "smtp.tls" in text
    settings = text[text.index("Settings that work") :]
    assert f"SMTP  {HOST}:587 STARTTLS" in settings
    assert "Login" not in settings
    data = json.loads(json.dumps(report.to_json()))
    assert data["address"] == HOST and data["exit_code"] == 0
    assert data["recommended"][0] == {
        "service": "smtp",
        "host": HOST,
        "port": 587,
        "security": "starttls",
        "login": None,
    }
    nagios = render_nagios(report, rules=rules)
    assert nagios.startswith(f"MAILDIAG OK - {HOST}: ")
    assert f"days_to_expiry_smtp_{HOST}:587=" in nagios.splitlines()[0]
    junit = render_junit(report, rules=rules)
    assert f'name="smtp.tls {HOST} {HOST}:587"' in junit


def test_a_service_with_no_port_that_answers_fails(
    dns_zone: Callable[..., Any], certs: Certs, rules: RuleBase
) -> None:
    targets = server_targets(HOST, frozenset({Service.POP3}))
    config = RunConfig(
        HOST,
        explicit=targets,
        only=frozenset({Service.POP3}),
        check_clock=False,
        timeout=2,
        server=True,
    )
    zone = dns_zone({HOST: {"A": ["127.0.0.1"]}})
    dns = Dns(zone.address, timeout=2, port_map={995: free_port(), 110: free_port()})
    report = check_mailbox(config, rules=rules, dns=dns)
    assert int(report.exit_code) == 2
    assert [f.rule for f in report.findings] == ["net.connection-refused"] * 2
    assert report.recommended == ()


@pytest.mark.parametrize(("required", "exit_code"), [(frozenset(), 0), ({Service.POP3}, 2)])
def test_a_service_the_server_does_not_offer_fails_only_when_asked_for(
    dns_zone: Callable[..., Any],
    smtp_server: Callable[..., Any],
    certs: Certs,
    rules: RuleBase,
    required: frozenset[Service],
    exit_code: int,
) -> None:
    """Submission works, POP3 refuses on 995 and 110: a server without POP3 is fine unless
    --only named POP3 (``required``)."""
    submission = smtp_server("starttls")
    targets = server_targets(HOST, frozenset({Service.SMTP, Service.POP3}))
    ports = {587: submission.port} | {p: free_port() for p in (465, 25, 995, 110)}
    config = RunConfig(
        HOST,
        explicit=targets,
        only=frozenset({Service.SMTP, Service.POP3}),
        ca_file=str(certs.ca_pem),
        check_clock=False,
        timeout=2,
        server=True,
        required=frozenset(required),
    )
    zone = dns_zone({HOST: {"A": ["127.0.0.1"]}})
    report = check_mailbox(config, rules=rules, dns=Dns(zone.address, timeout=2, port_map=ports))
    assert int(report.exit_code) == exit_code
    pop3 = [c for c in report.checks if c.id == "pop3.connect"]
    assert [c.status for c in pop3] == (["skip"] * 2 if exit_code == 0 else ["fail"] * 2)
    assert [r.service for r in report.recommended] == [Service.SMTP]


def test_a_server_and_its_port_on_the_command_line(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    """127.0.0.1:PORT/ssl with --only smtp: a port no service has as its standard one."""
    implicit = smtp_server("ssl")
    args = ["check", f"127.0.0.1:{implicit.port}/ssl", "--only", "smtp", "--no-clock"]
    args += ["--ca-file", str(certs.ca_pem), "--timeout", "3"]
    result = run_cli(*args, "--json")
    assert result.code == 0, result.out + result.err
    report = result.json
    assert report["address"] == f"127.0.0.1:{implicit.port}/ssl"
    assert [c["status"] for c in report["checks"] if c["id"] == "smtp.greeting"] == ["ok"]
    assert report["recommended"][0]["security"] == "ssl"
    nagios = run_cli(*args, "--format", "nagios")
    assert nagios.code == 0 and nagios.out.startswith("MAILDIAG OK - ")
    text = run_cli(*args)
    assert "SSL/TLS" in text.out[text.out.index("Settings that work") :]


def test_a_targets_file_may_name_a_server(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            defaults:
              password_env: MAIL_PASSWORD
            targets:
              - alice@example.test
              - {HOST}
              - address: {HOST}:587
                only: smtp
            """
        )
    )
    loaded = load_targets(str(path))
    assert [t.address for t in loaded.targets] == ["alice@example.test", HOST, f"{HOST}:587"]
    # the file's password is for its mailboxes
    assert "password_env" in loaded.targets[0].values
    assert "password_env" not in loaded.targets[1].values
    path.write_text(f"targets:\n  - {HOST}\n  - {HOST.upper()}\n")
    with pytest.raises(ConfigError, match="repeats the address"):
        load_targets(str(path))
    path.write_text(f"targets:\n  - address: {HOST}\n    login: bob\n")
    with pytest.raises(ConfigError, match="'login' needs a mailbox"):
        load_targets(str(path))
