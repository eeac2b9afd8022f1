"""smtp.auth and smtp.sender against real aiosmtpd peers on 127.0.0.1 (Session driven directly)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.handlers import Sink
from conftest import english
from test_auth_support import (
    ALICE,
    PASSWORD,
    PostfixLike,
    RecordingController,
    YandexLike,
    by_check,
    config,
    drive,
    secret_forms,
    signals,
    smtp_peer,
    target,
)

from maildiag.models import Security, Service, Status
from maildiag.probes.auth import cram_md5_response, plain_response

USERS = {ALICE: PASSWORD}


@pytest.fixture
def peer(certs: Any) -> Iterator[Callable[..., RecordingController]]:
    started: list[RecordingController] = []

    def make(handler: Any = None, **kw: Any) -> RecordingController:
        c = smtp_peer(certs, handler if handler is not None else YandexLike(), **kw)
        started.append(c)
        return c

    yield make
    for c in started:
        c.stop()


def run(port: int, certs: Any, security: Security = Security.STARTTLS, **kw: Any) -> dict:
    cfg = config(ca_file=str(certs.ca_pem), **kw)
    return by_check(drive(target(Service.SMTP, port, security), cfg))


# -- without a password: does the server demand AUTH? --------------------------------------


def test_auth_required_at_mail_yandex(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users=USERS)
    obs = run(server.port, certs)
    a = obs["smtp.auth"]
    assert a.status is Status.OK
    assert signals(a) == ["auth.required"]
    assert a.problems[0].text == "530 5.7.0 Send auth command first."
    assert a.data["auth_required"] is True and a.data["refused_at"] == "MAIL"
    assert sorted(a.data["mechanisms"]) == ["LOGIN", "PLAIN"]
    assert obs["smtp.sender"].status is Status.SKIP
    assert "needs a password" in english(obs["smtp.sender"])
    assert server.commands()[-2:] == ["RSET", "QUIT"]
    assert "RCPT" not in server.commands() and "AUTH" not in server.commands()


def test_auth_required_aiosmtpd_auth_required(peer: Any, certs: Any) -> None:
    server = peer(Sink(), users=USERS, auth_required=True)
    a = run(server.port, certs)["smtp.auth"]
    assert signals(a) == ["auth.required"]
    assert a.problems[0].text == "530 5.7.0 Authentication required"


def test_auth_required_at_rcpt_postfix(peer: Any, certs: Any) -> None:
    server = peer(PostfixLike(), users=USERS)
    a = run(server.port, certs)["smtp.auth"]
    assert a.status is Status.OK and signals(a) == ["auth.required"]
    assert a.problems[0].text == (f"553 5.7.1 <{ALICE}>: Sender address rejected: not logged in")
    assert a.data["refused_at"] == "RCPT"
    assert server.commands()[-4:] == ["MAIL", "RCPT", "RSET", "QUIT"]


def test_open_server_accepts_without_auth(peer: Any, certs: Any) -> None:
    server = peer(Sink())
    a = run(server.port, certs)["smtp.auth"]
    assert a.status is Status.OK and a.problems == ()
    assert a.data["auth_required"] is False
    assert "accepted without authentication" in english(a)


def test_starttls_demanded_at_mail_is_not_auth_required(peer: Any, certs: Any) -> None:
    # /plain asked for, server insists on STARTTLS: the rules must see the reply (tls_required)
    server = peer(Sink(), require_starttls=True)
    a = run(server.port, certs, Security.PLAIN)["smtp.auth"]
    assert signals(a) == ["reply"]
    assert a.problems[0].text == "530 Must issue a STARTTLS command first"
    assert a.status is Status.FAIL


# -- with a password -------------------------------------------------------------------------


def test_login_plain_then_sender_ok(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users=USERS)
    obs = run(server.port, certs, password=PASSWORD)
    a, s = obs["smtp.auth"], obs["smtp.sender"]
    assert a.status is Status.OK, a
    assert a.data["accepted"] is True and a.data["mechanism"] == "PLAIN"
    assert "C: AUTH PLAIN ********" in a.transcript
    assert s.status is Status.OK and s.data["accepted"] is True
    assert [c for c in server.commands() if c in ("AUTH", "MAIL", "RCPT", "RSET", "QUIT")] == [
        "AUTH",
        "MAIL",
        "RCPT",
        "RSET",
        "QUIT",
    ]
    assert f"AUTH PLAIN {plain_response(ALICE, PASSWORD)}" in server.received


def test_login_mechanism_login(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users=USERS, auth_exclude_mechanism=["PLAIN"])
    obs = run(server.port, certs, password=PASSWORD)
    a = obs["smtp.auth"]
    assert a.data["mechanism"] == "LOGIN" and a.status is Status.OK
    assert "C: AUTH LOGIN" in a.transcript
    assert a.transcript.count("C: ********") == 2
    assert base64.b64encode(PASSWORD.encode()).decode() in server.received


def test_wrong_password_one_attempt(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users={ALICE: "something else"})
    obs = run(server.port, certs, password=PASSWORD)
    a = obs["smtp.auth"]
    assert a.status is Status.FAIL
    assert signals(a) == ["reply"]
    assert a.problems[0].text == "535 5.7.8 Authentication credentials invalid"
    assert obs["smtp.sender"].status is Status.SKIP
    assert server.commands().count("AUTH") == 1  # no retry with another mechanism
    assert "MAIL" not in server.commands()


def test_sender_not_owned_at_mail(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users=USERS)
    obs = run(server.port, certs, password=PASSWORD, sender="bob@example.test")
    assert obs["smtp.auth"].status is Status.OK
    s = obs["smtp.sender"]
    assert s.status is Status.FAIL and signals(s) == ["reply"]
    assert s.problems[0].text == "553 5.7.1 Sender address rejected: not owned by auth user."
    assert s.data["refused_at"] == "MAIL"
    assert "RCPT" not in server.commands()


def test_sender_not_owned_at_rcpt(peer: Any, certs: Any) -> None:
    server = peer(PostfixLike(), users=USERS)
    obs = run(server.port, certs, password=PASSWORD, sender="bob@example.test")
    s = obs["smtp.sender"]
    assert s.status is Status.FAIL and s.data["refused_at"] == "RCPT"
    assert s.problems[0].text == (
        f"553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user {ALICE}"
    )
    assert server.commands()[-4:] == ["MAIL", "RCPT", "RSET", "QUIT"]


def test_untrusted_certificate_password_not_sent(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), users=USERS)
    cfg = config(password=PASSWORD)  # no --ca-file: the trustme CA is unknown
    obs = by_check(drive(target(Service.SMTP, server.port), cfg))
    assert obs["smtp.auth"].status is Status.SKIP
    assert "certificate could not be verified" in english(obs["smtp.auth"])
    assert obs["smtp.sender"].status is Status.SKIP
    assert "AUTH" not in server.commands()
    assert not any(s in line for line in server.received for s in secret_forms(ALICE))


def test_starttls_required_before_auth_on_plain(peer: Any, certs: Any) -> None:
    # /plain asked for; the server lists AUTH only after STARTTLS (it would answer 538 if
    # asked): AUTH that was not offered is never sent, the capabilities say enough
    server = peer(YandexLike(), users=USERS)
    obs = run(server.port, certs, Security.PLAIN, password=PASSWORD)
    a = obs["smtp.auth"]
    assert a.status is Status.FAIL
    assert signals(a) == ["auth.plaintext_refused"]
    assert "STARTTLS" in a.problems[0].text and "AUTH" not in a.problems[0].text
    assert "AUTH" not in server.commands()
    assert not any(s in line for line in server.received for s in secret_forms(ALICE))


def test_plain_connection_when_asked(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), mode="plain", users=USERS, auth_require_tls=False)
    obs = run(server.port, certs, Security.PLAIN, password=PASSWORD)
    a = obs["smtp.auth"]
    assert a.data["accepted"] is True
    assert "auth.plain_connection" in signals(a) and a.status is Status.WARN
    assert obs["smtp.sender"].status is Status.OK


def test_unencrypted_without_plain_asked_sends_nothing(peer: Any, certs: Any) -> None:
    server = peer(YandexLike(), mode="plain", users=USERS, auth_require_tls=False)
    obs = run(server.port, certs, Security.AUTO, password=PASSWORD)
    assert obs["smtp.tls"].status is Status.WARN
    assert obs["smtp.auth"].status is Status.SKIP
    assert "not encrypted" in english(obs["smtp.auth"])
    assert "AUTH" not in server.commands()


def test_one_login_per_service_per_run(peer: Any, certs: Any) -> None:
    one = peer(YandexLike(), users={ALICE: "other"})
    two = peer(YandexLike(), users={ALICE: "other"})
    cfg = config(ca_file=str(certs.ca_pem), password=PASSWORD)
    obs = drive([target(Service.SMTP, one.port), target(Service.SMTP, two.port)], cfg)
    auths = [o for o in obs if o.check == "smtp.auth"]
    assert [o.status for o in auths] == [Status.FAIL, Status.SKIP]
    assert "already tried" in english(auths[1])
    assert one.commands().count("AUTH") == 1 and "AUTH" not in two.commands()


# -- scripted peers: mechanisms aiosmtpd lacks ---------------------------------------------


def _scripted_smtp(ehlo: list[str], answers: dict[str, str]) -> Callable[[Any], None]:
    def handle(p: Any) -> None:
        p.send("220 test ESMTP")
        while (line := p.readline()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                for i, item in enumerate(ehlo):
                    p.send(("250 " if i == len(ehlo) - 1 else "250-") + item)
            elif verb == "QUIT":
                p.send("221 bye")
                return
            else:
                p.send(answers.get(verb, answers.get(line, "250 ok")))

    return handle


def test_no_usable_mechanism(line_server: Any, certs: Any) -> None:
    server = line_server(_scripted_smtp(["test", "AUTH XOAUTH2 OAUTHBEARER"], {}), tls=certs.valid)
    a = run(server.port, certs, Security.SSL, password=PASSWORD)["smtp.auth"]
    assert a.status is Status.FAIL and signals(a) == ["auth.no_mechanism"]
    assert a.problems[0].params["offered"] == "XOAUTH2 OAUTHBEARER"
    assert not any(line.upper().startswith("AUTH") for line in server.received)


def test_cram_md5_rfc2195_example() -> None:
    challenge = base64.b64encode(b"<1896.697170952@postoffice.reston.mci.net>").decode()
    got = base64.b64decode(cram_md5_response("tim", "tanstaaftanstaaf", challenge)).decode()
    assert got == "tim b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_preferred_in_clear(line_server: Any, certs: Any) -> None:
    challenge = base64.b64encode(b"<42.1@test>").decode()
    expected = cram_md5_response(ALICE, PASSWORD, challenge)

    def handle(p: Any) -> None:
        p.send("220 test ESMTP")
        while (line := p.readline()) is not None:
            if line.startswith("EHLO"):
                p.send("250-test")
                p.send("250 AUTH PLAIN LOGIN CRAM-MD5")
            elif line == "AUTH CRAM-MD5":
                p.send("334 " + challenge)
                answer = p.readline()
                p.send("235 2.7.0 ok" if answer == expected else "535 5.7.8 bad")
            elif line.startswith(("MAIL", "RCPT", "RSET")):
                p.send("250 ok")
            elif line == "QUIT":
                p.send("221 bye")
                return
            else:
                p.send("502 no")

    server = line_server(handle)
    a = run(server.port, certs, Security.PLAIN, password=PASSWORD)["smtp.auth"]
    assert a.data["mechanism"] == "CRAM-MD5" and a.data["accepted"] is True
    assert PASSWORD not in "\n".join(server.received)
    assert "C: ********" in a.transcript


def test_server_hangs_up_during_auth(line_server: Any, certs: Any) -> None:
    def handle(p: Any) -> None:
        p.send("220 test ESMTP")
        while (line := p.readline()) is not None:
            if line.startswith("EHLO"):
                p.send("250-test")
                p.send("250 AUTH PLAIN")
            elif line.startswith("AUTH"):
                return  # hang up mid-login

    server = line_server(handle, tls=certs.valid)
    obs = run(server.port, certs, Security.SSL, password=PASSWORD)
    a = obs["smtp.auth"]
    assert a.status is Status.FAIL and signals(a) == ["greeting.closed"]
    assert obs["smtp.sender"].status is Status.SKIP
    assert "broke off" in english(obs["smtp.sender"])


def test_server_silent_after_auth_times_out(line_server: Any, certs: Any) -> None:
    def handle(p: Any) -> None:
        p.send("220 test ESMTP")
        while (line := p.readline()) is not None:
            if line.startswith("EHLO"):
                p.send("250-test")
                p.send("250 AUTH PLAIN")
            # AUTH: say nothing, keep the connection open

    server = line_server(handle, tls=certs.valid)
    obs = run(server.port, certs, Security.SSL, password=PASSWORD, timeout=0.5)
    a = obs["smtp.auth"]
    assert a.status is Status.FAIL and signals(a) == ["connect.timeout"]
    assert PASSWORD not in repr(obs)
