"""imap.auth, pop3.auth, the login form and the cross-protocol check, against scripted peers."""

from __future__ import annotations

from typing import Any

from conftest import english
from test_auth_support import (
    ALICE,
    PASSWORD,
    by_check,
    config,
    drive,
    secret_forms,
    signals,
    target,
)

from maildiag.discovery.providers import load_providers
from maildiag.models import Security, Service, Status
from maildiag.probes.auth import cross_check

USERS = {ALICE: PASSWORD}
YANDEX_POP3_OFF = "-ERR Login failure or POP3 disabled, try later."
DOVECOT_FAILED = "-ERR [AUTH] Authentication failed."
GMAIL_ALERT = (
    "[ALERT] Application-specific password required: "
    "https://support.google.com/accounts/answer/185833 (Failure)"
)


def run(svc: Service, port: int, certs: Any, security: Security = Security.SSL, **kw: Any) -> dict:
    cfg = config(ca_file=str(certs.ca_pem), **kw)
    return by_check(drive(target(svc, port, security), cfg))


# -- IMAP ------------------------------------------------------------------------------------


def test_imap_login_ok_then_logout(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users=USERS)
    a = run(Service.IMAP, server.port, certs, password=PASSWORD)["imap.auth"]
    assert a.status is Status.OK and a.data["accepted"] is True
    assert a.data["mechanism"] == "LOGIN"
    assert any(line.endswith(f'LOGIN "{ALICE}" ********') for line in a.transcript)
    verbs = [line.split(" ")[1].upper() for line in server.received]
    assert verbs == ["CAPABILITY", "LOGIN", "LOGOUT"]


def test_imap_app_password_required(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users={ALICE: "other"}, fail_text=GMAIL_ALERT)
    a = run(Service.IMAP, server.port, certs, password=PASSWORD)["imap.auth"]
    assert a.status is Status.FAIL and signals(a) == ["reply"]
    assert a.problems[0].text == "NO " + GMAIL_ALERT  # our tag stripped, the rest verbatim
    assert sum(line.split(" ")[1] == "LOGIN" for line in server.settled()) == 1


def test_imap_logindisabled_on_plain(imap_server: Any, certs: Any) -> None:
    server = imap_server(users=USERS, login_disabled_before_tls=True)
    a = run(Service.IMAP, server.port, certs, Security.PLAIN, password=PASSWORD)["imap.auth"]
    assert a.status is Status.FAIL and signals(a) == ["auth.plaintext_refused"]
    assert "LOGINDISABLED" in a.problems[0].text
    assert not any(" LOGIN " in f" {line} " for line in server.settled())


def test_imap_starttls_then_login(imap_server: Any, certs: Any) -> None:
    server = imap_server(users=USERS, starttls=certs.valid, login_disabled_before_tls=True)
    obs = run(Service.IMAP, server.port, certs, Security.STARTTLS, password=PASSWORD)
    assert obs["imap.tls"].status is Status.OK
    assert obs["imap.auth"].status is Status.OK


def test_imap_without_password_is_skipped(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users=USERS)
    a = run(Service.IMAP, server.port, certs)["imap.auth"]
    assert a.status is Status.SKIP and "needs a password" in english(a)
    assert not any(line.split(" ")[1] == "LOGIN" for line in server.settled())


def test_imap_password_with_quotes(imap_server: Any, certs: Any) -> None:
    odd = 'pa"ss\\wo rd'
    server = imap_server(implicit_tls=True, users={ALICE: odd})
    # the fake server does not unescape: the login is refused, but the escaped form is masked
    a = run(Service.IMAP, server.port, certs, password=odd)["imap.auth"]
    text = "\n".join(a.transcript) + repr(a)
    assert odd not in text and 'pa\\"ss\\\\wo rd' not in text


# -- POP3 ------------------------------------------------------------------------------------


def test_pop3_login_ok(pop3_server: Any, certs: Any) -> None:
    server = pop3_server(implicit_tls=True, users=USERS)
    a = run(Service.POP3, server.port, certs, password=PASSWORD)["pop3.auth"]
    assert a.status is Status.OK and a.data["mechanism"] == "USER/PASS"
    assert "C: PASS ********" in a.transcript
    assert [line.split(" ")[0] for line in server.settled()] == ["CAPA", "USER", "PASS", "QUIT"]


def test_pop3_disabled_yandex_text(pop3_server: Any, certs: Any) -> None:
    server = pop3_server(
        implicit_tls=True, users=USERS, denied=frozenset({ALICE}), deny_text=YANDEX_POP3_OFF
    )
    a = run(Service.POP3, server.port, certs, password=PASSWORD)["pop3.auth"]
    assert a.status is Status.FAIL and signals(a) == ["reply"]
    assert a.problems[0].text == YANDEX_POP3_OFF
    assert [line.split(" ")[0] for line in server.settled()].count("PASS") == 1


def test_pop3_without_password_is_skipped(pop3_server: Any, certs: Any) -> None:
    server = pop3_server(implicit_tls=True, users=USERS)
    a = run(Service.POP3, server.port, certs)["pop3.auth"]
    assert a.status is Status.SKIP
    assert "USER" not in [line.split(" ")[0] for line in server.settled()]


# -- across protocols --------------------------------------------------------------------------


def test_cross_check_dovecot_pop3_denied(imap_server: Any, pop3_server: Any, certs: Any) -> None:
    imap = imap_server(implicit_tls=True, users=USERS)
    pop3 = pop3_server(
        implicit_tls=True, users=USERS, denied=frozenset({ALICE}), deny_text=DOVECOT_FAILED
    )
    cfg = config(ca_file=str(certs.ca_pem), password=PASSWORD)
    raw = drive(
        [
            target(Service.IMAP, imap.port, Security.SSL),
            target(Service.POP3, pop3.port, Security.SSL),
        ],
        cfg,
        cross=False,
    )
    assert signals(by_check(raw)["pop3.auth"]) == ["reply"]  # alone it reads as a bad password
    p = by_check(cross_check(raw))["pop3.auth"]
    assert signals(p) == ["auth.protocol_disabled"]
    assert p.problems[0].text == DOVECOT_FAILED
    assert p.problems[0].params["accepted_by"] == "IMAP"
    assert by_check(cross_check(raw))["imap.auth"].status is Status.OK


def test_cross_check_both_refused_stays_auth_failure(
    imap_server: Any, pop3_server: Any, certs: Any
) -> None:
    imap = imap_server(implicit_tls=True, users={ALICE: "other"})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: "other"})
    cfg = config(ca_file=str(certs.ca_pem), password=PASSWORD)
    obs = by_check(
        drive(
            [
                target(Service.IMAP, imap.port, Security.SSL),
                target(Service.POP3, pop3.port, Security.SSL),
            ],
            cfg,
        )
    )
    assert signals(obs["pop3.auth"]) == ["reply"] and signals(obs["imap.auth"]) == ["reply"]


# -- login form ------------------------------------------------------------------------------


def yandex() -> Any:
    provider = load_providers().get("yandex")
    assert provider is not None
    return provider


def test_provider_login_form_used(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users={"alice": PASSWORD})
    cfg = config(address="alice@yandex.ru", ca_file=str(certs.ca_pem), password=PASSWORD)
    a = by_check(drive(target(Service.IMAP, server.port, Security.SSL), cfg, provider=yandex()))[
        "imap.auth"
    ]
    assert a.status is Status.OK and a.data["login"] == "alice"


def test_wrong_login_form_reported(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users={"alice": PASSWORD})
    cfg = config(
        address="alice@yandex.ru",
        login="alice@yandex.ru",
        ca_file=str(certs.ca_pem),
        password=PASSWORD,
    )
    a = by_check(drive(target(Service.IMAP, server.port, Security.SSL), cfg, provider=yandex()))[
        "imap.auth"
    ]
    assert a.status is Status.FAIL
    assert signals(a) == ["reply", "auth.login_form"]
    assert a.problems[1].params["expected_login"] == "alice"
    assert a.problems[1].params["form"] == "localpart"


def test_custom_domain_at_yandex_wants_full_address(imap_server: Any, certs: Any) -> None:
    server = imap_server(implicit_tls=True, users={"bob@firm.example": PASSWORD})
    cfg = config(
        address="bob@firm.example", login="bob", ca_file=str(certs.ca_pem), password=PASSWORD
    )
    a = by_check(drive(target(Service.IMAP, server.port, Security.SSL), cfg, provider=yandex()))[
        "imap.auth"
    ]
    assert signals(a) == ["reply", "auth.login_form"]
    assert a.problems[1].params["expected_login"] == "bob@firm.example"
    assert a.problems[1].params["form"] == "address"


def test_no_secret_in_observations(imap_server: Any, pop3_server: Any, certs: Any) -> None:
    imap = imap_server(implicit_tls=True, users={ALICE: "x"}, fail_text=f"echo {PASSWORD}")
    pop3 = pop3_server(implicit_tls=True, users={ALICE: "x"}, fail_text=f"-ERR echo {PASSWORD}")
    cfg = config(ca_file=str(certs.ca_pem), password=PASSWORD)
    obs = drive(
        [
            target(Service.IMAP, imap.port, Security.SSL),
            target(Service.POP3, pop3.port, Security.SSL),
        ],
        cfg,
    )
    dump = repr(obs) + repr(cfg)
    for secret in secret_forms(ALICE):
        assert secret not in dump
    assert "echo ********" in dump  # a server echoing the password is masked, not dropped
