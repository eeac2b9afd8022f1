"""End to end: ``maildiag check --json`` against loopback peers; the categories users read.

Each test runs the real CLI with explicit servers (no discovery network traffic), the built-in
rule base, and asserts the JSON findings of the login checks and the exit code.
"""

from __future__ import annotations

from typing import Any

from conftest import CliResult, run_cli
from test_auth_support import (
    ALICE,
    PASSWORD,
    PostfixLike,
    YandexLike,
)

ENV = {"MAILDIAG_TEST_PW": PASSWORD}


def check(
    certs: Any, *servers: str, password: bool = True, extra: tuple[str, ...] = ()
) -> CliResult:
    only = ",".join(s.split(" ", 1)[0].lstrip("-") for s in servers)
    args = [
        "check",
        ALICE,
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--json",
        "--only",
        only,
    ]
    for s in servers:
        args += s.split(" ", 1)
    if password:
        args += ["--password-env", "MAILDIAG_TEST_PW"]
    result = run_cli(*args, *extra, env=ENV if password else None)
    assert result.out.startswith("{"), result.err
    return result


def login_findings(result: CliResult, check_id: str) -> list[dict[str, Any]]:
    return [f for f in result.json["findings"] if f["check"] == check_id]


def categories(result: CliResult, check_id: str) -> list[str]:
    return [f["category"] for f in login_findings(result, check_id)]


def test_auth_required_is_info_and_exit_0(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(YandexLike(), users={ALICE: PASSWORD})
    r = check(certs, f"--smtp 127.0.0.1:{server.port}/starttls", password=False)
    [finding] = login_findings(r, "smtp.auth")
    assert finding["category"] == "auth_required"
    assert finding["severity"] == "info"
    assert finding["evidence"] == "530 5.7.0 Send auth command first."
    assert r.code == 0 and r.json["exit_code"] == 0


def test_auth_required_at_rcpt_postfix(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(PostfixLike(), users={ALICE: PASSWORD})
    r = check(certs, f"--smtp 127.0.0.1:{server.port}/starttls", password=False)
    assert categories(r, "smtp.auth") == ["auth_required"]
    assert r.code == 0


def test_wrong_password_is_auth_failed(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(YandexLike(), users={ALICE: "not this one"})
    r = check(certs, f"--smtp 127.0.0.1:{server.port}/starttls")
    assert categories(r, "smtp.auth") == ["auth_failed"]
    assert r.code == 2
    sender = next(c for c in r.json["checks"] if c["id"] == "smtp.sender")
    assert sender["status"] == "skip"


def test_sender_not_owned_at_mail(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(YandexLike(), users={ALICE: PASSWORD})
    r = check(
        certs, f"--smtp 127.0.0.1:{server.port}/starttls", extra=("--from", "bob@example.test")
    )
    assert categories(r, "smtp.sender") == ["sender_not_owned"]
    assert login_findings(r, "smtp.auth") == []
    assert r.code == 2


def test_sender_not_owned_at_rcpt(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(PostfixLike(), users={ALICE: PASSWORD})
    r = check(
        certs, f"--smtp 127.0.0.1:{server.port}/starttls", extra=("--from", "bob@example.test")
    )
    assert categories(r, "smtp.sender") == ["sender_not_owned"]
    assert r.code == 2


def test_sender_owned_all_ok(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(PostfixLike(), users={ALICE: PASSWORD})
    r = check(certs, f"--smtp 127.0.0.1:{server.port}/starttls")
    assert r.code == 0, r.json["findings"]
    statuses = {c["id"]: c["status"] for c in r.json["checks"]}
    assert statuses["smtp.auth"] == "ok" and statuses["smtp.sender"] == "ok"


def test_starttls_required_before_auth(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(YandexLike(), users={ALICE: PASSWORD})
    r = check(certs, f"--smtp 127.0.0.1:{server.port}/plain")
    assert categories(r, "smtp.auth") == ["tls_required"]
    assert r.code == 2


def test_pop3_disabled_yandex(pop3_server: Any, certs: Any) -> None:
    server = pop3_server(
        implicit_tls=True,
        users={ALICE: PASSWORD},
        denied=frozenset({ALICE}),
        deny_text="-ERR Login failure or POP3 disabled, try later.",
    )
    r = check(certs, f"--pop3 127.0.0.1:{server.port}/ssl")
    assert categories(r, "pop3.auth") == ["protocol_disabled"]
    assert r.code == 2


def test_pop3_denied_while_imap_works_dovecot(
    imap_server: Any, pop3_server: Any, certs: Any
) -> None:
    imap = imap_server(implicit_tls=True, users={ALICE: PASSWORD})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: PASSWORD}, denied=frozenset({ALICE}))
    r = check(certs, f"--imap 127.0.0.1:{imap.port}/ssl", f"--pop3 127.0.0.1:{pop3.port}/ssl")
    assert categories(r, "pop3.auth") == ["protocol_disabled"]
    assert login_findings(r, "imap.auth") == []


def test_gmail_app_password_required(imap_server: Any, certs: Any) -> None:
    server = imap_server(
        implicit_tls=True,
        users={ALICE: "x"},
        fail_text="[ALERT] Application-specific password required: "
        "https://support.google.com/accounts/answer/185833 (Failure)",
    )
    r = check(certs, f"--imap 127.0.0.1:{server.port}/ssl")
    assert categories(r, "imap.auth") == ["app_password_required"]
    assert r.code == 2


def test_wrong_login_form_for_provider(imap_server: Any, certs: Any) -> None:
    # yandex.ru boxes log in with the part before the @ (provider database)
    server = imap_server(implicit_tls=True, users={"alice": PASSWORD})
    r = run_cli(
        "check",
        "alice@yandex.ru",
        "--imap",
        f"127.0.0.1:{server.port}/ssl",
        "--only",
        "imap",
        "--login",
        "alice@yandex.ru",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--json",
        "--password-env",
        "MAILDIAG_TEST_PW",
        env=ENV,
    )
    findings = login_findings(r, "imap.auth")
    assert "auth.login-form" in [f["rule"] for f in findings], findings
    assert r.code == 2
    # without --login the provider's form is used and the login works
    ok = run_cli(
        "check",
        "alice@yandex.ru",
        "--imap",
        f"127.0.0.1:{server.port}/ssl",
        "--only",
        "imap",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--json",
        "--password-env",
        "MAILDIAG_TEST_PW",
        env=ENV,
    )
    auth = next(c for c in ok.json["checks"] if c["id"] == "imap.auth")
    assert auth["status"] == "ok" and auth["data"]["login"] == "alice"
