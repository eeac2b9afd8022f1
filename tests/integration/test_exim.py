"""``maildiag check`` against a real Exim submission server (exim.py), judged by Exim's own log.

The same scenarios as for Postfix: healthy (implicit TLS and STARTTLS), AUTH required, wrong
password, sender not owned, SMTP denied for one user, STARTTLS required, mode mismatch, bad
certificates, never sends, no password in any output. Every run is checked against Exim's
mainlog and spool (``assert_safe``): no DATA reached the predata ACL, no message was received
("<=") or queued, and no form of the password is in maildiag's output or in Exim's log.
"""

from __future__ import annotations

import re

import pytest

from .conftest import CheckRun, RunCheck
from .cyrus import CyrusServer
from .exim import RCPT_MARKER, EximServer
from .prefix import DAVE, FAMILY_PASSWORDS
from .servers import ALICE, DATA_MARKER, HOST, MAIL_HOST, NOT_OWNED, secret_forms
from .test_check_real_servers import WRONG_PASSWORD, assert_exit, explicit, finding

pytestmark = pytest.mark.integration


def assert_safe(run: CheckRun) -> None:
    """Exim's word that nothing was sent: no DATA, nothing received or queued, no secret."""
    log = run.logs["exim"]
    assert DATA_MARKER not in log, f"Exim saw DATA from maildiag:\n{log}"
    assert not re.search(r"^\S+ \S+ \S+ <= ", log, re.M), f"Exim received a message:\n{log}"
    assert run.queued == [], f"files in Exim's spool: {run.queued}"
    assert run.logs["exim-panic"] == "", f"Exim panicked:\n{run.logs['exim-panic']}"
    if run.password:
        login = next((u for u, p in FAMILY_PASSWORDS.items() if p == run.password), ALICE)
        forms = secret_forms(run.password, login)
        leaked = [f for f in forms if f in run.stdout + run.stderr]
        assert leaked == [], f"the password leaked into maildiag's output as {leaked}"
        assert not [f for f in forms if f in log], "the password is in Exim's log"
        assert run.password not in " ".join(run.argv)


def auth_lines(log: str) -> list[str]:
    """What Exim logged about AUTH: successes show as A=... on a line, failures by name."""
    return [
        ln
        for ln in log.splitlines()
        if "authenticator failed" in ln or " A=" in ln or "AUTH command" in ln
    ]


# ------------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize(("listener", "mode"), [("submissions", "ssl"), ("submission", "starttls")])
def test_healthy(check_exim: RunCheck, exim: EximServer, listener: str, mode: str) -> None:
    run = check_exim(
        ALICE,
        *explicit("smtp", MAIL_HOST, exim.ports[listener], mode),
        password=FAMILY_PASSWORDS[ALICE],
    )
    for step in ("connect", "greeting", "tls", "capabilities", "auth"):
        assert run.check(f"smtp.{step}")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "ok", run.ids()
    assert [f for f in run.report["findings"] if f["severity"] != "info"] == []
    assert_exit(run, 0, "ok")
    # Exim accepted RCPT for the authenticated alice, over TLS, and nothing more
    assert re.search(rf"{RCPT_MARKER}: <{ALICE}> for {ALICE} tls=TLS1\.[23]:", run.logs["exim"]), (
        run.logs["exim"]
    )
    assert_safe(run)


@pytest.mark.parametrize(("listener", "mode"), [("submissions", "ssl"), ("submission", "starttls")])
def test_auth_required_without_password(
    check_exim: RunCheck, exim: EximServer, listener: str, mode: str
) -> None:
    """No password: Exim refuses at MAIL (not at RCPT as Postfix does):
    '530 5.7.0 Authentication required'."""
    run = check_exim(ALICE, *explicit("smtp", HOST, exim.ports[listener], mode))
    f = finding(run, "auth_required", "smtp.auth")
    assert f["severity"] == "info" and "530 5.7.0 Authentication required" in f["evidence"], f
    assert run.check("smtp.auth")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "skip", run.ids()
    assert f"rejected MAIL <{ALICE}>: 530 5.7.0 Authentication required" in run.logs["exim"]
    assert_exit(run, 0, "ok")
    assert_safe(run)


# ------------------------------------------------------------------------------------- logins


def test_wrong_password(check_exim: RunCheck, exim: EximServer) -> None:
    """Exim: '535 Incorrect authentication data'."""
    run = check_exim(
        ALICE, *explicit("smtp", HOST, exim.ports["submissions"], "ssl"), password=WRONG_PASSWORD
    )
    assert run.check("smtp.auth")["status"] == "fail", run.ids()
    f = finding(run, "auth_failed", "smtp.auth")
    assert "535 Incorrect authentication data" in f["evidence"], f
    assert run.check("smtp.sender")["status"] == "skip", run.ids()
    lines = auth_lines(run.logs["exim"])
    assert len(lines) == 1 and f"535 Incorrect authentication data (set_id={ALICE})" in lines[0]
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_sender_not_owned(check_exim: RunCheck, exim: EximServer) -> None:
    """Exim's ACL refuses the sender at MAIL, after a good login:
    '553 5.7.1 Sender address <someone-else@example.test> is not owned by alice@example.test'."""
    run = check_exim(
        ALICE,
        *explicit("smtp", HOST, exim.ports["submission"], "starttls"),
        "--from",
        NOT_OWNED,
        password=FAMILY_PASSWORDS[ALICE],
    )
    assert run.check("smtp.auth")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "fail", run.ids()
    f = finding(run, "sender_not_owned", "smtp.sender")
    # Exim folds a long reply into continuation lines ("553-5.7.1 ... is not owned by")
    assert "is not owned by" in f["evidence"] and ALICE in f["evidence"], f
    assert f"rejected MAIL <{NOT_OWNED}>: 553 5.7.1" in run.logs["exim"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_smtp_denied_for_one_user_alone_reads_as_wrong_password(
    check_exim: RunCheck, exim: EximServer
) -> None:
    """Exim answers a user whose SMTP is switched off exactly as a wrong password: alone,
    nothing tells them apart, and maildiag must not claim more than it knows."""
    run = check_exim(
        DAVE,
        *explicit("smtp", HOST, exim.ports["submissions"], "ssl"),
        password=FAMILY_PASSWORDS[DAVE],
    )
    finding(run, "auth_failed", "smtp.auth")
    assert "protocol_disabled" not in run.categories()
    assert f"535 Incorrect authentication data (set_id={DAVE})" in run.logs["exim"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_smtp_denied_while_cyrus_pop3_accepts(
    check_both: RunCheck, exim: EximServer, cyrus: CyrusServer
) -> None:
    """The same login and password work on Cyrus POP3: the SMTP refusal is protocol_disabled."""
    run = check_both(
        DAVE,
        "--smtp",
        f"{HOST}:{exim.ports['submissions']}/ssl",
        "--pop3",
        f"{HOST}:{cyrus.ports['pop3s']}/ssl",
        "--only",
        "smtp,pop3",
        password=FAMILY_PASSWORDS[DAVE],
    )
    assert run.check("pop3.auth")["status"] == "ok", run.ids()
    f = finding(run, "protocol_disabled", "smtp.auth")
    assert "535 Incorrect authentication data" in f["evidence"], f
    assert "auth_failed" not in run.categories(), run.report["findings"]
    assert re.search(rf"pop3s\[\d+\]: login: .* {DAVE} plaintext\+TLS", run.logs["cyrus"])
    assert_exit(run, 2, "fail")
    assert_safe(run)


# ------------------------------------------------------------------------ TLS demands and modes


def test_starttls_required_with_password(check_exim: RunCheck, exim: EximServer) -> None:
    """'No encryption' on Exim's submission port: AUTH is listed only inside TLS. maildiag sends
    no AUTH (Exim would answer '503 AUTH command used when not advertised') and no password."""
    run = check_exim(
        ALICE,
        *explicit("smtp", HOST, exim.ports["submission"], "plain"),
        password=FAMILY_PASSWORDS[ALICE],
    )
    f = finding(run, "tls_required", "smtp.auth")
    assert "STARTTLS" in f["evidence"], f
    assert "other" not in run.categories() and "auth_failed" not in run.categories()
    assert auth_lines(run.logs["exim"]) == [], auth_lines(run.logs["exim"])
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_starttls_required_without_password(check_exim: RunCheck, exim: EximServer) -> None:
    """Without a password the same port demands AUTH at MAIL ('530 5.7.0 Authentication
    required'), which a program set to no encryption cannot give: tls_required, and the
    demand for AUTH beside it."""
    run = check_exim(ALICE, *explicit("smtp", HOST, exim.ports["submission"], "plain"))
    auth = run.check("smtp.auth")
    assert [f["category"] for f in auth["findings"]] == ["tls_required", "auth_required"], auth
    assert f"rejected MAIL <{ALICE}>: 530 5.7.0 Authentication required" in run.logs["exim"]
    assert auth_lines(run.logs["exim"]) == []
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize(
    ("listener", "mode"),
    [
        # implicit TLS set up as STARTTLS: Exim waits silently for a ClientHello
        ("submissions", "starttls"),
        # STARTTLS set up as SSL: Exim greets in plain text
        ("submission", "ssl"),
    ],
)
def test_tls_mode_mismatch(
    check_exim: RunCheck, exim: EximServer, listener: str, mode: str
) -> None:
    run = check_exim(ALICE, *explicit("smtp", HOST, exim.ports[listener], mode), timeout=2)
    assert run.check("smtp.greeting")["status"] == "fail", run.ids()
    finding(run, "tls_mismatch", "smtp.greeting")
    assert "connection_timeout" not in run.categories(), run.report["findings"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


# ------------------------------------------------------------------------------- certificates


@pytest.mark.parametrize(
    ("listener", "category"),
    [
        ("expired", "cert_expired"),
        ("wronghost", "cert_untrusted"),
        ("selfsigned", "cert_untrusted"),
    ],
)
def test_bad_certificate_and_no_password_sent(
    check_exim: RunCheck, exim: EximServer, listener: str, category: str
) -> None:
    run = check_exim(
        ALICE,
        *explicit("smtp", MAIL_HOST, exim.ports[listener], "ssl"),
        password=FAMILY_PASSWORDS[ALICE],
    )
    assert run.check("smtp.tls")["status"] == "fail", run.ids()
    assert finding(run, category, "smtp.tls")["severity"] == "fail"
    others = {"cert_expired", "cert_untrusted", "clock_skew", "tls_interception"} - {category}
    assert not others & run.categories(), run.categories()
    assert run.check("smtp.auth")["status"] != "ok", run.ids()
    assert auth_lines(run.logs["exim"]) == [], "AUTH reached Exim over an unverified connection"
    assert_exit(run, 2, "fail")
    assert_safe(run)


# --------------------------------------------------------------------- what never happens


@pytest.mark.parametrize(
    ("password", "output"),
    [
        (FAMILY_PASSWORDS[ALICE], "json"),
        (FAMILY_PASSWORDS[ALICE], "text"),
        (WRONG_PASSWORD, "json"),
    ],
    ids=["right-json", "right-text", "wrong-json"],
)
def test_transcripts_never_show_the_password(
    check_exim: RunCheck, exim: EximServer, password: str, output: str
) -> None:
    run = check_exim(
        ALICE,
        *explicit("smtp", HOST, exim.ports["submission"], "starttls"),
        "--transcript",
        password=password,
        json_output=(output == "json"),
    )
    if output == "json":
        lines = "\n".join(run.check("smtp.auth").get("transcript", []))
        assert "AUTH PLAIN ********" in lines, lines
    # the session went as far as it should and no further
    ended = [ln for ln in run.logs["exim"].splitlines() if "closed by QUIT" in ln]
    assert ended, run.logs["exim"]
    assert_safe(run)
