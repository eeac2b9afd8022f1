"""What never happens in a login check: a leaked password, a sent message, a changed mailbox.

Every run goes through the real CLI (in-process ``run_cli`` and one ``python -m maildiag``
subprocess) against loopback peers that record every line they receive. The leak tests scan
every byte printed — stdout and stderr, in each output format, with ``--transcript`` — for the
password and each base64 form an AUTH exchange carries: PLAIN ``\\0login\\0password``, LOGIN
``base64(password)``, and the ``login\\0login\\0password`` variant.
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.handlers import Sink
from conftest import CliResult, run_cli, run_cli_subprocess
from test_auth_support import (
    ALICE,
    FORBIDDEN_IMAP,
    FORBIDDEN_POP3,
    FORBIDDEN_SMTP,
    PASSWORD,
    PostfixLike,
    Recording,
    YandexLike,
    secret_forms,
)

ENV = {"MAILDIAG_TEST_PW": PASSWORD}
FORMATS = ("text", "json", "junit", "nagios", "prometheus")


class AcceptAll(Sink, Recording):
    """Takes any envelope (the most tempting server to send a message to); counts DATA."""


def check_args(
    certs: Any,
    *,
    smtp: int | None = None,
    imap: int | None = None,
    pop3: int | None = None,
    fmt: str = "json",
    password: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    args = [
        "check",
        ALICE,
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--transcript",
        "--format",
        fmt,
    ]
    only = []
    if smtp is not None:
        args += ["--smtp", f"127.0.0.1:{smtp}/starttls"]
        only.append("smtp")
    if imap is not None:
        args += ["--imap", f"127.0.0.1:{imap}/ssl"]
        only.append("imap")
    if pop3 is not None:
        args += ["--pop3", f"127.0.0.1:{pop3}/ssl"]
        only.append("pop3")
    args += ["--only", ",".join(only)]
    if password:
        args += ["--password-env", "MAILDIAG_TEST_PW"]
    return [*args, *extra]


def assert_no_secret(result: CliResult, login: str = ALICE) -> None:
    printed = result.out + result.err
    assert printed.strip(), "the run printed nothing: nothing was scanned"
    for secret in secret_forms(login):
        assert secret not in printed, f"a secret form leaked: {secret[:3]}..."


# -- no leak ------------------------------------------------------------------------------


def test_no_leak_in_any_format(
    smtp_peers: Any, imap_server: Any, pop3_server: Any, certs: Any
) -> None:
    """Successful logins on all three protocols; every format; transcripts on."""
    smtp = smtp_peers(YandexLike(), users={ALICE: PASSWORD})
    imap = imap_server(implicit_tls=True, users={ALICE: PASSWORD})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: PASSWORD})
    for fmt in FORMATS:
        result = run_cli(
            *check_args(certs, smtp=smtp.port, imap=imap.port, pop3=pop3.port, fmt=fmt), env=ENV
        )
        assert result.code in (0, 1, 2), result.err
        assert_no_secret(result)
    # the transcript really was there and masked (so the scan above looked at AUTH lines)
    result = run_cli(*check_args(certs, smtp=smtp.port, imap=imap.port, pop3=pop3.port), env=ENV)
    lines = [line for c in result.json["checks"] for line in c.get("transcript", [])]
    assert "C: AUTH PLAIN ********" in lines
    assert "C: PASS ********" in lines
    assert any(line.endswith(f'LOGIN "{ALICE}" ********') for line in lines)
    # and the peers did receive the real secret, so there was something to leak
    assert any(PASSWORD in line for line in pop3.received)


def test_no_leak_auth_login_and_refusals(
    smtp_peers: Any, imap_server: Any, pop3_server: Any, certs: Any
) -> None:
    """AUTH LOGIN continuations, wrong passwords, and servers that echo the password back."""
    smtp = smtp_peers(YandexLike(), users={ALICE: "wrong"}, auth_exclude_mechanism=["PLAIN"])
    imap = imap_server(
        implicit_tls=True,
        users={ALICE: "x"},
        fail_text=f"[AUTHENTICATIONFAILED] bad password {PASSWORD}",
    )
    pop3 = pop3_server(
        implicit_tls=True, users={ALICE: "x"}, fail_text=f"-ERR [AUTH] you sent {PASSWORD}"
    )
    for fmt in ("text", "json"):
        result = run_cli(
            *check_args(certs, smtp=smtp.port, imap=imap.port, pop3=pop3.port, fmt=fmt), env=ENV
        )
        assert result.code == 2, result.out + result.err
        assert_no_secret(result)
        assert "********" in result.out


def test_no_leak_subprocess(smtp_peers: Any, pop3_server: Any, certs: Any) -> None:
    smtp = smtp_peers(PostfixLike(), users={ALICE: PASSWORD})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: "x"}, fail_text=f"-ERR {PASSWORD}")
    for fmt in ("json", "text"):
        result = run_cli_subprocess(
            *check_args(
                certs, smtp=smtp.port, pop3=pop3.port, fmt=fmt, extra=("--from", "bob@example.test")
            ),
            env=ENV,
            timeout=60,
        )
        assert result.code == 2, result.out + result.err
        assert_no_secret(result)


def test_password_never_in_argv_or_config_repr() -> None:
    from maildiag.options import check_config

    cfg = check_config({"address": ALICE}, password=PASSWORD)
    assert PASSWORD not in repr(cfg)
    from maildiag.address import parse_address
    from maildiag.probes.auth import make_plan

    assert PASSWORD not in repr(make_plan(cfg, parse_address(ALICE), None))


# -- never sends ---------------------------------------------------------------------------


def _verbs(lines: list[str], *, tagged: bool) -> set[str]:
    out = set()
    for line in lines:
        parts = line.split()
        if tagged and len(parts) > 1:
            out.add(parts[1].upper())
        if parts:
            out.add(parts[0].upper())
    return out


def test_never_sends_mail_or_changes_a_mailbox(
    smtp_peers: Any, imap_server: Any, pop3_server: Any, certs: Any
) -> None:
    """Servers that accept everything; with and without a password; the peers' logs scanned."""
    handlers = [AcceptAll(), AcceptAll()]
    with_pw = smtp_peers(handlers[0], users={ALICE: PASSWORD})
    without_pw = smtp_peers(handlers[1])
    imap = imap_server(implicit_tls=True, users={ALICE: PASSWORD})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: PASSWORD})
    run_cli(*check_args(certs, smtp=with_pw.port, imap=imap.port, pop3=pop3.port), env=ENV)
    run_cli(
        *check_args(certs, smtp=without_pw.port, imap=imap.port, pop3=pop3.port, password=False)
    )
    for server in (with_pw, without_pw):
        verbs = _verbs(server.received, tagged=False)
        assert {"MAIL", "RCPT", "RSET"} <= verbs  # it went as far as allowed ...
        assert not verbs & set(FORBIDDEN_SMTP)  # ... and no further
    assert {"AUTH"} <= _verbs(with_pw.received, tagged=False)
    assert all(h.data_calls == 0 for h in handlers)
    imap_verbs = _verbs(imap.received, tagged=True)
    assert "LOGIN" in imap_verbs and not imap_verbs & set(FORBIDDEN_IMAP)
    pop3_verbs = _verbs(pop3.received, tagged=False)
    assert "PASS" in pop3_verbs and not pop3_verbs & set(FORBIDDEN_POP3)


def test_rcpt_is_only_ever_the_users_own_address(smtp_peers: Any, certs: Any) -> None:
    server = smtp_peers(AcceptAll(), users={ALICE: PASSWORD})
    run_cli(*check_args(certs, smtp=server.port, extra=("--from", "bob@example.test")), env=ENV)
    rcpts = [line for line in server.received if line.upper().startswith("RCPT")]
    assert rcpts == [f"RCPT TO:<{ALICE}>"]
