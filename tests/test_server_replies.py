"""Logins as other server families answer them (issue 16), on scripted loopback peers.

Four behaviours seen on real servers (Exim, Cyrus) that maildiag used to get wrong:

* a plaintext submission port that lists STARTTLS but no AUTH (AUTH only inside TLS): maildiag
  must not send AUTH at all, and the finding is ``tls_required``;
* POP3 ``-ERR [SYS/TEMP] Access to this service has been blocked`` (Cyrus user_deny):
  ``protocol_disabled`` even without a cross-check;
* POP3 ``-ERR [AUTH] USER command only available under a layer`` (Cyrus without plaintext
  logins): ``tls_required`` with the server's words as evidence, no ``other`` above it;
* IMAP ``NO Login failed: authorization failure`` (authoriZation: Cyrus user_deny):
  ``protocol_disabled`` with a cross-check and alone.

Each is pinned by what the user gets (the JSON report of ``check``), and by the property that
``check`` and ``explain`` give the same category for the same reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from peers import PeerConn

PASSWORD = "Cyrus-Exim-Peer-S3cret-9917"
ALICE = "alice@example.test"
PW_ENV = "MAILDIAG_TEST_PASSWORD"

EXIM_NOT_ADVERTISED = "503 AUTH command used when not advertised"
INVALID_COMMAND = "503 5.5.1 Invalid command"
CYRUS_POP3_DENIED = "-ERR [SYS/TEMP] Access to this service has been blocked"
CYRUS_POP3_NO_PLAINTEXT = "-ERR [AUTH] USER command only available under a layer"
CYRUS_IMAP_DENIED = "NO Login failed: authorization failure"


# -- scripted peers ---------------------------------------------------------------------------


def smtp_auth_after_tls(
    auth_reply: str,
    *,
    starttls: bool = True,
    mail_reply: str = "530 Must issue a STARTTLS command first",
) -> Callable[[PeerConn], None]:
    """A plaintext port that lists STARTTLS (or nothing) but no AUTH, and refuses AUTH."""

    def handle(p: PeerConn) -> None:
        p.send("220 mail.example.test ESMTP Exim 4.96 ready")
        while (line := p.readline()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                items = ["mail.example.test Hello [127.0.0.1]", "SIZE 52428800", "PIPELINING"]
                if starttls:
                    items.append("STARTTLS")
                for i, item in enumerate(items):
                    p.send(("250 " if i == len(items) - 1 else "250-") + item)
            elif verb == "AUTH":
                p.send(auth_reply)
            elif verb == "QUIT":
                p.send("221 mail.example.test closing connection")
                return
            elif verb == "MAIL":
                p.send(mail_reply)
            else:
                p.send("250 Reset OK")

    return handle


def pop3_peer(
    *, capa: list[str], user_reply: str = "+OK Name is a valid mailbox", pass_reply: str = ""
) -> Callable[[PeerConn], None]:
    def handle(p: PeerConn) -> None:
        p.send("+OK mail.example.test Cyrus POP3 server ready")
        while (line := p.readline()) is not None:
            cmd = line.split(" ", 1)[0].upper()
            if cmd == "CAPA":
                for item in ("+OK List of capabilities follows", *capa, "."):
                    p.send(item)
            elif cmd == "USER":
                p.send(user_reply)
            elif cmd == "PASS":
                p.send(pass_reply or "+OK Mailbox locked and ready")
            elif cmd == "QUIT":
                p.send("+OK")
                return
            else:
                p.send("-ERR Unrecognized command")

    return handle


def imap_peer(login_reply: str) -> Callable[[PeerConn], None]:
    """``login_reply`` after the tag, for LOGIN and AUTHENTICATE alike."""

    def handle(p: PeerConn) -> None:
        caps = "IMAP4rev1 LITERAL+ ID AUTH=PLAIN SASL-IR"
        p.send(f"* OK [CAPABILITY {caps}] mail.example.test Cyrus IMAP server ready")
        while (line := p.readline()) is not None:
            tag, _, rest = line.partition(" ")
            cmd = rest.split(" ", 1)[0].upper()
            if cmd == "CAPABILITY":
                p.send(f"* CAPABILITY {caps}")
                p.send(f"{tag} OK Completed")
            elif cmd in ("LOGIN", "AUTHENTICATE"):
                p.send(f"{tag} {login_reply}")
            elif cmd == "LOGOUT":
                p.send("* BYE LOGOUT received")
                p.send(f"{tag} OK Completed")
                return
            else:
                p.send(f"{tag} BAD Unrecognized command")

    return handle


# -- helpers ----------------------------------------------------------------------------------


def check(cli: Any, certs: Any, *servers: str, only: str) -> dict[str, Any]:
    """``maildiag check --json`` with the password from the environment; the JSON report."""
    args = ["check", ALICE, *servers, "--only", only, "--ca-file", str(certs.ca_pem)]
    args += ["--no-clock", "--timeout", "5", "--lang", "en", "--json", "--password-env", PW_ENV]
    result = cli(*args, env={PW_ENV: PASSWORD})
    assert result.code in (0, 1, 2), result.err
    report: dict[str, Any] = result.json
    assert PASSWORD not in result.out + result.err
    return report


def findings_of(report: dict[str, Any], check_id: str) -> list[dict[str, Any]]:
    return [f for c in report["checks"] if c["id"] == check_id for f in c["findings"]]


def explained(cli: Any, text: str) -> str | None:
    """The category ``explain`` gives the text first, or None when no rule matched."""
    result = cli("explain", "--json", "--lang", "en", text)
    assert result.code == 0, result.err
    found = result.json["findings"]
    return str(found[0]["category"]) if found else None


def sent_secret(received: list[str]) -> bool:
    import base64

    forms = [PASSWORD, base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()]
    return any(f in line for line in received for f in forms)


# -- 1. SMTP: AUTH only inside TLS -------------------------------------------------------------


@pytest.mark.parametrize("refusal", [EXIM_NOT_ADVERTISED, INVALID_COMMAND])
def test_smtp_plain_port_without_auth_is_tls_required(
    line_server: Any, certs: Any, cli: Any, refusal: str
) -> None:
    server = line_server(smtp_auth_after_tls(refusal))
    report = check(cli, certs, "--smtp", f"127.0.0.1:{server.port}/plain", only="smtp")
    auth = findings_of(report, "smtp.auth")
    assert auth and auth[0]["category"] == "tls_required", auth
    assert "other" not in {f["category"] for f in auth}, auth
    assert "STARTTLS" in auth[0]["evidence"], auth[0]  # the server's EHLO reply
    assert not any(line.upper().startswith("AUTH") for line in server.settled()), server.settled()
    assert not sent_secret(server.settled())
    assert report["exit_code"] == 2


def test_smtp_plain_port_without_auth_or_starttls_sends_no_auth(
    line_server: Any, certs: Any, cli: Any
) -> None:
    """No AUTH and no STARTTLS (a port-25 relay): still no AUTH sent; not a TLS demand."""
    server = line_server(smtp_auth_after_tls(EXIM_NOT_ADVERTISED, starttls=False))
    report = check(cli, certs, "--smtp", f"127.0.0.1:{server.port}/plain", only="smtp")
    auth = findings_of(report, "smtp.auth")
    assert auth and "tls_required" not in {f["category"] for f in auth}, auth
    assert not any(line.upper().startswith("AUTH") for line in server.settled()), server.settled()
    assert not sent_secret(server.settled())


def test_smtp_plain_port_without_auth_and_without_password(
    line_server: Any, certs: Any, cli: Any
) -> None:
    """No password: the server demands AUTH at MAIL (Exim: '530 5.7.0 Authentication
    required') but offers it only inside TLS: a program set to no encryption cannot log in."""
    server = line_server(
        smtp_auth_after_tls(EXIM_NOT_ADVERTISED, mail_reply="530 5.7.0 Authentication required")
    )
    args = ["check", ALICE, "--smtp", f"127.0.0.1:{server.port}/plain", "--only", "smtp"]
    result = cli(*args, "--ca-file", str(certs.ca_pem), "--no-clock", "--json", "--lang", "en")
    report = result.json
    auth = findings_of(report, "smtp.auth")
    assert [f["category"] for f in auth] == ["tls_required", "auth_required"], auth
    assert "STARTTLS" in auth[0]["evidence"] and auth[1]["evidence"].startswith("530"), auth
    assert report["exit_code"] == 2
    assert not any(line.upper().startswith("AUTH") for line in server.settled())


def test_smtp_check_and_explain_agree(line_server: Any, certs: Any, cli: Any) -> None:
    server = line_server(smtp_auth_after_tls(EXIM_NOT_ADVERTISED))
    report = check(cli, certs, "--smtp", f"127.0.0.1:{server.port}/plain", only="smtp")
    assert findings_of(report, "smtp.auth")[0]["category"] == "tls_required"
    assert explained(cli, EXIM_NOT_ADVERTISED) == "tls_required"


# -- 2. POP3: access to this service blocked ---------------------------------------------------


def test_pop3_service_blocked_alone_is_protocol_disabled(
    line_server: Any, certs: Any, cli: Any
) -> None:
    server = line_server(
        pop3_peer(capa=["TOP", "UIDL", "USER", "SASL PLAIN"], pass_reply=CYRUS_POP3_DENIED),
        tls=certs.valid,
    )
    report = check(cli, certs, "--pop3", f"127.0.0.1:{server.port}/ssl", only="pop3")
    auth = findings_of(report, "pop3.auth")
    assert auth and auth[0]["category"] == "protocol_disabled", auth
    assert auth[0]["evidence"] == CYRUS_POP3_DENIED
    assert "other" not in {f["category"] for f in auth}, auth
    assert explained(cli, CYRUS_POP3_DENIED) == "protocol_disabled"


@pytest.mark.parametrize(
    "text",
    [
        "-ERR Access to this service is disabled for your account",
        "NO Access to this service is not allowed",
        "* BYE Access to this service has been blocked",
    ],
)
def test_service_blocked_wording(cli: Any, text: str) -> None:
    assert explained(cli, text) == "protocol_disabled"


# -- 3. POP3: USER only under a layer ----------------------------------------------------------


def test_pop3_user_only_under_a_layer_is_tls_required(
    line_server: Any, certs: Any, cli: Any
) -> None:
    server = line_server(
        pop3_peer(capa=["TOP", "UIDL", "STLS", "PIPELINING"], user_reply=CYRUS_POP3_NO_PLAINTEXT)
    )
    report = check(cli, certs, "--pop3", f"127.0.0.1:{server.port}/plain", only="pop3")
    auth = findings_of(report, "pop3.auth")
    assert auth, report["checks"]
    assert auth[0]["category"] == "tls_required", auth
    assert auth[0]["evidence"] == CYRUS_POP3_NO_PLAINTEXT
    assert "other" not in {f["category"] for f in auth}, auth
    assert all(f["evidence"] for f in auth), auth  # every finding quotes the server
    # the password never went out, so nothing may say it was sent unencrypted
    assert not any(line.upper().startswith("PASS") for line in server.settled())
    assert not sent_secret(server.settled())
    top = [f for f in report["findings"] if f["check"] == "pop3.auth"]
    assert top[0]["category"] == "tls_required", top
    assert explained(cli, CYRUS_POP3_NO_PLAINTEXT) == "tls_required"


# -- 4. IMAP: authorization failure ------------------------------------------------------------


def test_imap_authorization_failure_alone(line_server: Any, certs: Any, cli: Any) -> None:
    server = line_server(imap_peer(CYRUS_IMAP_DENIED), tls=certs.valid)
    report = check(cli, certs, "--imap", f"127.0.0.1:{server.port}/ssl", only="imap")
    auth = findings_of(report, "imap.auth")
    assert auth and auth[0]["category"] == "protocol_disabled", auth
    assert auth[0]["evidence"] == CYRUS_IMAP_DENIED
    assert explained(cli, CYRUS_IMAP_DENIED) == "protocol_disabled"
    assert explained(cli, "A0001 " + CYRUS_IMAP_DENIED) == "protocol_disabled"


def test_imap_authorization_failure_with_cross_check(
    line_server: Any, certs: Any, cli: Any
) -> None:
    imap = line_server(imap_peer(CYRUS_IMAP_DENIED), tls=certs.valid)
    pop3 = line_server(pop3_peer(capa=["USER", "SASL PLAIN"]), tls=certs.valid)
    report = check(
        cli,
        certs,
        "--imap",
        f"127.0.0.1:{imap.port}/ssl",
        "--pop3",
        f"127.0.0.1:{pop3.port}/ssl",
        only="imap,pop3",
    )
    auth = findings_of(report, "imap.auth")
    assert auth and auth[0]["category"] == "protocol_disabled", auth
    assert auth[0]["evidence"] == CYRUS_IMAP_DENIED
    pop3_auth = [c for c in report["checks"] if c["id"] == "pop3.auth"][0]
    assert pop3_auth["status"] == "ok", pop3_auth


def test_authentication_failure_is_still_a_wrong_password(cli: Any) -> None:
    """The counterpart: authentiCation failure (SASL_BADAUTH) is the password's fault."""
    assert explained(cli, "NO Login failed: authentication failure") == "auth_failed"


# -- ranking within one check ------------------------------------------------------------------


def test_generic_finding_never_outranks_a_specific_one() -> None:
    """diagnose: within one check an ``other`` finding comes after every specific one."""
    from maildiag.diagnose import diagnose
    from maildiag.models import (
        Observation,
        Problem,
        Security,
        Service,
        Source,
        Status,
        Summary,
        Target,
    )
    from maildiag.rulebase import RuleBase

    target = Target(Service.POP3, "127.0.0.1", 110, Security.PLAIN, Source.EXPLICIT)
    obs = Observation(
        "pop3.auth",
        Status.FAIL,
        Summary("auth.refused", {"mechanism": "USER/PASS", "reply": "-ERR xyzzy frobnicated"}),
        target,
        problems=(
            Problem("reply", "-ERR xyzzy frobnicated"),  # no rule knows it: other
            Problem("auth.plaintext_refused", "-ERR [AUTH] Plaintext authentication disallowed"),
        ),
    )
    results, merged = diagnose([obs], RuleBase.load(), lang="en", provider=None)
    cats = [f.category for f in results[0].findings]
    assert [str(c) for c in cats] == ["tls_required", "other"], cats
    assert [str(f.category) for f in merged] == ["tls_required", "other"]
