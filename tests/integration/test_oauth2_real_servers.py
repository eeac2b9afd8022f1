"""OAuth2 logins against real servers: Dovecot's oauth2 passdb validates the tokens (JWTs signed
by a key of the run, checked locally: signature, expiry, the login, the scope) for IMAP and POP3,
and Postfix hands SMTP AUTH XOAUTH2 to the same Dovecot (servers.py).

The same runs as with a password (``assert_safe``: no message sent, no mailbox changed, no
mailbox-changing command after login), plus: the token appears nowhere in maildiag's output or
argv, and the servers' answers to a refused token — Dovecot's error challenge, then its refusal
after maildiag's dummy response — are diagnosed.
"""

from __future__ import annotations

import base64

import pytest

from .conftest import CheckRun, RunCheck
from .servers import ALICE, CAROL, MAIL_HOST, MailServers
from .test_check_real_servers import assert_exit, assert_safe

pytestmark = pytest.mark.integration

TOKEN_ENV = "MAILDIAG_IT_TOKEN"


def servers(mail_servers: MailServers) -> list[str]:
    p = mail_servers.ports
    return [
        *("--smtp", f"{MAIL_HOST}:{p.submissions}/ssl"),
        *("--imap", f"{MAIL_HOST}:{p.imaps}/ssl"),
        *("--pop3", f"{MAIL_HOST}:{p.pop3s}/ssl"),
    ]


def check(
    maildiag: RunCheck, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch, token: str
) -> CheckRun:
    monkeypatch.setenv(TOKEN_ENV, token)
    run = maildiag(ALICE, *servers(mail_servers), "--oauth2-token-env", TOKEN_ENV, "--transcript")
    output = run.stdout + run.stderr
    assert token not in output and token not in " ".join(run.argv)
    assert base64.b64encode(token.encode()).decode()[:40] not in output
    return run


def test_a_valid_token_logs_in_everywhere(
    maildiag: RunCheck, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = check(maildiag, mail_servers, monkeypatch, mail_servers.oauth_token(ALICE))
    for cid in ("smtp.auth", "imap.auth", "pop3.auth", "smtp.sender"):
        assert run.check(cid)["status"] == "ok", run.ids()
    for cid in ("smtp.auth", "imap.auth", "pop3.auth"):
        assert run.check(cid)["data"]["mechanism"] == "XOAUTH2"
    dovecot = run.logs["dovecot"]
    for proto in ("imap", "pop3"):
        assert f"{proto}-login: Info: Login: user=<{ALICE}>, method=XOAUTH2" in dovecot, dovecot
    assert "sasl_method=XOAUTH2" in run.logs["postfix"], run.logs["postfix"]
    # the read-only proof that the mailbox is reachable, and nothing else after the login
    imap_commands = [
        line.split()[1].upper()
        for text in run.rawlog.values()
        for line in text.splitlines()
        if len(line.split()) > 1
    ]
    assert "STATUS" in imap_commands, run.rawlog
    assert_exit(run, 0, "ok")
    assert_safe(run)


def test_an_expired_token_is_refused_with_dovecots_challenge(
    maildiag: RunCheck, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = check(maildiag, mail_servers, monkeypatch, mail_servers.oauth_token(ALICE, expired=True))
    for cid in ("smtp.auth", "imap.auth", "pop3.auth"):
        auth = run.check(cid)
        assert auth["status"] == "fail", run.ids()
        # Dovecot's XOAUTH2 challenge, decoded, and its refusal after our empty response
        assert auth["data"]["oauth2_error"] == {
            "status": "401",
            "schemes": "bearer",
            "scope": "mail",
        }
        assert auth["findings"][0]["rule"] == "oauth.token-invalid", auth["findings"]
        assert any(line == "C: " for line in auth["transcript"]), auth["transcript"]
    assert run.check("smtp.sender")["status"] == "skip"
    assert "Token has expired" in run.logs["dovecot"], run.logs["dovecot"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_a_token_for_a_user_without_pop3_is_protocol_disabled(
    maildiag: RunCheck, mail_servers: MailServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """carol's POP3 is denied (Dovecot's deny passdb): her token works for IMAP and SMTP, and
    POP3 refuses it exactly as a bad token — the cross-check says the protocol is off."""
    monkeypatch.setenv(TOKEN_ENV, mail_servers.oauth_token(CAROL))
    run = maildiag(CAROL, *servers(mail_servers), "--oauth2-token-env", TOKEN_ENV)
    for cid in ("smtp.auth", "imap.auth", "smtp.sender"):
        assert run.check(cid)["status"] == "ok", run.ids()
    pop3 = run.check("pop3.auth")
    assert pop3["status"] == "fail" and pop3["data"]["accepted_by"] == ["imap", "smtp"]
    assert pop3["findings"][0]["rule"] == "oauth.protocol-disabled", pop3["findings"]
    assert pop3["findings"][0]["category"] == "protocol_disabled"
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize("expired", [False, True], ids=["valid", "expired"])
def test_oauthbearer_as_maildiag_writes_it_is_what_dovecot_takes(
    mail_servers: MailServers, expired: bool
) -> None:
    """maildiag prefers XOAUTH2 where both are offered; its OAUTHBEARER message (RFC 7628 3.1)
    and dummy response (``AQ==``) are held to Dovecot's parser directly."""
    import socket
    import ssl

    from maildiag.oauth2 import DUMMY_RESPONSE, encode, oauthbearer_message

    port = mail_servers.ports.imaps
    token = mail_servers.oauth_token(ALICE, expired=expired)
    message = encode(oauthbearer_message(ALICE, token, MAIL_HOST, port))
    ctx = ssl.create_default_context(cafile=str(mail_servers.ca_pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=MAIL_HOST) as tls,
        tls.makefile("rwb") as f,
    ):
        assert f.readline().startswith(b"* OK")
        f.write(f"a1 AUTHENTICATE OAUTHBEARER {message}\r\n".encode())
        f.flush()
        answer = f.readline()
        if expired:
            assert base64.b64decode(answer[2:].strip()) == b'{"status":"invalid_token"}'
            f.write(DUMMY_RESPONSE["OAUTHBEARER"].encode() + b"\r\n")
            f.flush()
            assert f.readline().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        else:
            assert answer.startswith(b"a1 OK"), answer
