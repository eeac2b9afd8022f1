"""``maildiag check`` end to end against real Postfix, Dovecot and dnsmasq (see servers.py).

Each test runs the real CLI in a subprocess (``python -m maildiag check ... --json``, password
through ``--password-env``) and asserts on its JSON report and exit code as SPEC.md defines
them. Every run is also checked against the servers' own evidence (``assert_safe``): Postfix
accepted no DATA/BDAT and queued or delivered nothing, no Maildir changed, Dovecot saw no
mailbox-changing command after login, and no form of the password appears in maildiag's output.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import CheckRun, RunCheck
from .servers import (
    ALICE,
    CAROL,
    DATA_MARKER,
    GOOD_CERT_DAYS,
    HOST,
    MAIL_HOST,
    MAIL_LOG_EVENTS,
    NOT_OWNED,
    NXDOMAIN,
    PASSWORDS,
    MailServers,
    secret_forms,
)

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "Wrong-Integration-Passw0rd-5580"

IMAP_CHANGING = {
    "SELECT",
    "STORE",
    "EXPUNGE",
    "APPEND",
    "COPY",
    "MOVE",
    "CREATE",
    "DELETE",
    "RENAME",
}
IMAP_UID_CHANGING = {"STORE", "COPY", "MOVE", "EXPUNGE"}
POP3_CHANGING = {"RETR", "DELE"}
MAIL_LOG_EVENT = re.compile(r": Info: (" + "|".join(MAIL_LOG_EVENTS) + r"): ")


# ------------------------------------------------------------------------------------ helpers


def assert_safe(run: CheckRun) -> None:
    """The SPEC's 'what never happens', proven by the servers, not by maildiag's word."""
    postfix = run.logs["postfix"]
    assert DATA_MARKER not in postfix, f"Postfix accepted DATA from maildiag:\n{postfix}"
    assert "status=sent" not in postfix, f"Postfix delivered a message:\n{postfix}"
    assert not re.search(r"qmgr\[\d+\]: \w+: from=<", postfix), f"a message was queued:\n{postfix}"
    for line in postfix.splitlines():
        if "disconnect from" in line:
            assert not re.search(r"\b(data|bdat)=", line), f"DATA/BDAT sent: {line}"
    assert run.queued == [], f"files in Postfix's queue: {run.queued}"
    assert run.counts_after == run.counts_before, "a Maildir got a new message"
    assert run.mailboxes_after == run.mailboxes_before, "a mailbox changed (flags or folders)"
    for name, text in run.rawlog.items():
        for line in text.splitlines():
            words = line.upper().split()
            bad = (
                (words[:1] and words[0] in POP3_CHANGING)
                or (len(words) > 1 and words[1] in IMAP_CHANGING)
                or (len(words) > 2 and words[1] == "UID" and words[2] in IMAP_UID_CHANGING)
            )
            assert not bad, f"maildiag sent a mailbox-changing command ({name}): {line}"
    events = [ln for ln in run.logs["dovecot"].splitlines() if MAIL_LOG_EVENT.search(ln)]
    assert events == [], f"Dovecot logged mailbox changes: {events}"
    for line in run.logs["dovecot"].splitlines():
        if "pop3(" in line and "Logged out" in line:
            assert "retr=0/0" in line and "del=0/" in line, line
    if run.password:
        login = ALICE if run.password == PASSWORDS[ALICE] else CAROL
        output = run.stdout + run.stderr
        leaked = [f for f in secret_forms(run.password, login) if f in output]
        assert leaked == [], f"the password leaked into maildiag's output as {leaked}"
        assert run.password not in " ".join(run.argv)


def finding(run: CheckRun, category: str, check: str | None = None) -> dict[str, Any]:
    """The finding of this category: from the check's own findings when a check is named
    (the top-level list drops repeats of the same advice), and always in the top-level list."""
    assert run.report
    summary = (
        f"findings: {[(f['check'], f['category'], f['severity']) for f in run.report['findings']]}"
        f"\nchecks: {run.ids()}"
    )
    assert category in run.categories(), f"no {category} finding in the report; {summary}"
    if check is None:
        found: dict[str, Any] = run.findings(category)[0]
        return found
    own: list[dict[str, Any]] = [
        f for c in run.checks(check) for f in c["findings"] if f["category"] == category
    ]
    assert own, f"no {category} finding under check {check}; {summary}"
    return own[0]


def assert_exit(run: CheckRun, code: int, status: str) -> None:
    assert run.report
    assert (run.returncode, run.report["exit_code"], run.report["status"]) == (
        code,
        code,
        status,
    ), run.explain()


def explicit(service: str, host: str, port: int, mode: str) -> list[str]:
    return [f"--{service}", f"{host}:{port}/{mode}", "--only", service]


# ------------------------------------------------------------------------------- the happy path


def test_healthy_mailbox_through_srv_discovery(
    maildiag: RunCheck, mail_servers: MailServers
) -> None:
    run = maildiag(ALICE, password=PASSWORDS[ALICE])
    r = run.report
    assert r["schema"] == "maildiag.report/1" and r["address"] == ALICE
    assert r["discovery"]["source"] == "srv", r["discovery"]
    p = mail_servers.ports
    allowed = {
        "smtp": {(p.submissions, "ssl"), (p.submission, "starttls")},
        "imap": {(p.imaps, "ssl"), (p.imap, "starttls")},
        "pop3": {(p.pop3s, "ssl"), (p.pop3, "starttls")},
    }
    services = {s["service"]: s for s in r["servers"]}
    assert set(services) == set(allowed), r["servers"]
    for svc, s in services.items():
        assert s["host"] == MAIL_HOST and (s["port"], s["security"]) in allowed[svc], s
    # discovery asked our DNS server, not the system's
    assert "query[SRV] _submissions._tcp.example.test" in run.logs["dnsmasq"]
    assert "query[SRV] _imaps._tcp.example.test" in run.logs["dnsmasq"]

    for svc in ("smtp", "imap", "pop3"):
        for step in ("connect", "greeting", "tls", "capabilities", "auth"):
            assert run.check(f"{svc}.{step}")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "ok", run.ids()
    assert run.check("dns")["status"] == "ok"
    assert run.check("clock")["status"] == "skip"
    serious = [f for f in r["findings"] if f["severity"] != "info"]
    assert serious == [], serious
    assert_exit(run, 0, "ok")

    # the logins really happened, on the real servers
    dovecot = run.logs["dovecot"]
    assert "imap-login: Info: Login: user=<alice@example.test>, method=" in dovecot
    assert "pop3-login: Info: Login: user=<alice@example.test>, method=" in dovecot
    assert "sasl_username=alice@example.test" in run.logs["postfix"]  # RCPT TO was accepted
    assert_safe(run)


@pytest.mark.parametrize(
    ("warn_days", "crit_days", "status", "code"),
    [(GOOD_CERT_DAYS + 30, 7, "warn", 1), (GOOD_CERT_DAYS + 60, GOOD_CERT_DAYS + 30, "fail", 2)],
)
def test_certificate_expiring_within_thresholds(
    maildiag: RunCheck,
    mail_servers: MailServers,
    warn_days: int,
    crit_days: int,
    status: str,
    code: int,
) -> None:
    run = maildiag(
        ALICE,
        *explicit("smtp", HOST, mail_servers.ports.submissions, "ssl"),
        "--warn-days",
        str(warn_days),
        "--crit-days",
        str(crit_days),
    )
    tls = run.check("smtp.tls")
    assert tls["status"] == status, run.ids()
    assert tls["findings"], tls
    assert_exit(run, code, status)
    assert_safe(run)


def test_starttls_everywhere_explicit(maildiag: RunCheck, mail_servers: MailServers) -> None:
    """SRV discovery picks the implicit-TLS ports; this walks Postfix's and Dovecot's STARTTLS
    and STLS paths, logins included."""
    p = mail_servers.ports
    run = maildiag(
        ALICE,
        "--smtp",
        f"{MAIL_HOST}:{p.submission}/starttls",
        "--imap",
        f"{MAIL_HOST}:{p.imap}/starttls",
        "--pop3",
        f"{MAIL_HOST}:{p.pop3}/starttls",
        password=PASSWORDS[ALICE],
    )
    assert run.report["discovery"]["source"] == "explicit", run.report["discovery"]
    assert {(s["service"], s["port"], s["security"]) for s in run.report["servers"]} == {
        ("smtp", p.submission, "starttls"),
        ("imap", p.imap, "starttls"),
        ("pop3", p.pop3, "starttls"),
    }
    for svc in ("smtp", "imap", "pop3"):
        for step in ("connect", "greeting", "tls", "capabilities", "auth"):
            assert run.check(f"{svc}.{step}")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "ok", run.ids()
    assert_exit(run, 0, "ok")
    postfix = run.logs["postfix"]
    assert "postfix/submission/smtpd" in postfix and "sasl_username=alice@example.test" in postfix
    dovecot = run.logs["dovecot"]
    assert re.search(r"imap-login: Info: Login: user=<alice@example.test>.*\bTLS\b", dovecot)
    assert re.search(r"pop3-login: Info: Login: user=<alice@example.test>.*\bTLS\b", dovecot)
    assert_safe(run)


@pytest.mark.parametrize(
    ("service", "listener", "mode"),
    [
        # an implicit-TLS port set up as STARTTLS: Postfix waits silently for a TLS ClientHello
        ("smtp", "submissions", "starttls"),
        # a STARTTLS port set up as SSL: Dovecot greets in plain text instead of TLS
        ("imap", "imap", "ssl"),
        # an implicit-TLS port set up without encryption: Dovecot waits silently
        ("pop3", "pop3s", "plain"),
    ],
)
def test_tls_mode_mismatch(
    maildiag: RunCheck, mail_servers: MailServers, service: str, listener: str, mode: str
) -> None:
    port = getattr(mail_servers.ports, listener)
    run = maildiag(ALICE, *explicit(service, HOST, port, mode), timeout=2)
    assert run.check(f"{service}.greeting")["status"] == "fail", run.ids()
    finding(run, "tls_mismatch", f"{service}.greeting")
    assert "connection_timeout" not in run.categories(), run.report["findings"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize(
    ("service", "listener"),
    [("smtp", "submissions"), ("smtp", "submission"), ("pop3", "pop3")],
    ids=["smtp-implicit-tls", "smtp-starttls", "pop3-stls"],
)
def test_mode_detected_on_unknown_port(
    maildiag: RunCheck, mail_servers: MailServers, service: str, listener: str
) -> None:
    """No mode given on a port that implies none: maildiag works it out from the real server
    (Postfix's implicit-TLS listener says nothing to a plaintext client)."""
    port = getattr(mail_servers.ports, listener)
    run = maildiag(
        ALICE,
        f"--{service}",
        f"{HOST}:{port}",
        "--only",
        service,
        password=PASSWORDS[ALICE],
        timeout=2,
    )
    for step in ("connect", "greeting", "tls", "capabilities", "auth"):
        assert run.check(f"{service}.{step}")["status"] == "ok", run.ids()
    assert_exit(run, 0, "ok")
    # the login went over TLS in either mode (Dovecot calls plaintext on 127.0.0.1 "secured")
    if service == "smtp":
        assert re.search(
            rf"postfix/{listener}/smtpd\[\d+\]: Anonymous TLS connection established",
            run.logs["postfix"],
        ), run.logs["postfix"]
    else:
        assert re.search(
            r"pop3-login: Info: Login: user=<alice@example.test>.*\bTLS\b", run.logs["dovecot"]
        ), run.logs["dovecot"]
    assert_safe(run)


# ------------------------------------------------------------------------------- certificates


@pytest.mark.parametrize(
    ("listener", "host", "category"),
    [
        ("smtp_expired", HOST, "cert_expired"),
        ("smtp_expired", MAIL_HOST, "cert_expired"),
        ("smtp_wronghost", HOST, "cert_untrusted"),
        ("smtp_wronghost", MAIL_HOST, "cert_untrusted"),
        ("smtp_selfsigned", HOST, "cert_untrusted"),
        ("smtp_selfsigned", MAIL_HOST, "cert_untrusted"),
    ],
)
def test_bad_certificate(
    maildiag: RunCheck, mail_servers: MailServers, listener: str, host: str, category: str
) -> None:
    port = getattr(mail_servers.ports, listener)
    run = maildiag(ALICE, *explicit("smtp", host, port, "ssl"))
    tls = run.check("smtp.tls")
    assert tls["status"] == "fail", run.ids()
    f = finding(run, category, "smtp.tls")
    assert f["severity"] == "fail"
    others = {"cert_expired", "cert_untrusted", "clock_skew", "tls_interception"} - {category}
    assert not others & run.categories(), run.categories()
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize("listener", ["smtp_expired", "smtp_wronghost", "smtp_selfsigned"])
def test_no_password_to_an_unverified_server(
    maildiag: RunCheck, mail_servers: MailServers, listener: str
) -> None:
    """With a password and a certificate that does not verify, the password is not sent:
    Postfix saw no AUTH command at all."""
    port = getattr(mail_servers.ports, listener)
    run = maildiag(ALICE, *explicit("smtp", HOST, port, "ssl"), password=PASSWORDS[ALICE])
    assert run.check("smtp.tls")["status"] == "fail", run.ids()
    postfix = run.logs["postfix"]
    disconnects = [ln for ln in postfix.splitlines() if "disconnect from" in ln]
    assert disconnects, postfix
    assert not any(re.search(r"\bauth=", ln) for ln in disconnects), disconnects
    assert "sasl_username" not in postfix and "authentication failed" not in postfix
    assert run.check("smtp.auth")["status"] != "ok", run.ids()
    assert_exit(run, 2, "fail")
    assert_safe(run)


# ------------------------------------------------------------------------ TLS and AUTH demands


@pytest.mark.parametrize("password", [PASSWORDS[ALICE], None], ids=["password", "no-password"])
def test_starttls_required_before_auth(
    maildiag: RunCheck, mail_servers: MailServers, password: str | None
) -> None:
    """A program set to 'no encryption' on a submission port that wants STARTTLS first:
    Postfix offers no AUTH before STARTTLS and answers MAIL FROM with
    '530 5.7.0 Must issue a STARTTLS command first'."""
    run = maildiag(
        ALICE, *explicit("smtp", HOST, mail_servers.ports.submission, "plain"), password=password
    )
    finding(run, "tls_required")
    assert "auth_failed" not in run.categories()
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_auth_required_without_password_is_info(
    maildiag: RunCheck, mail_servers: MailServers
) -> None:
    """No password: Postfix (submission) accepts MAIL FROM and refuses at RCPT TO with
    '554 5.7.1 <alice@example.test>: Recipient address rejected: Access denied'."""
    run = maildiag(ALICE)
    assert run.report["discovery"]["source"] == "srv"
    f = finding(run, "auth_required", "smtp.auth")
    assert f["severity"] == "info", f
    assert run.check("smtp.auth")["status"] == "ok", run.ids()
    for cid in ("smtp.sender", "imap.auth", "pop3.auth"):
        assert run.check(cid)["status"] == "skip", run.ids()
    # maildiag really asked: Postfix logged its refusal of the unauthenticated RCPT TO
    assert re.search(
        r"reject: RCPT from .*Recipient address rejected: Access denied", run.logs["postfix"]
    ), run.logs["postfix"]
    assert "Access denied" in f["evidence"] or "554" in f["evidence"], f
    assert_exit(run, 0, "ok")
    assert_safe(run)


def test_open_port_is_not_auth_required(maildiag: RunCheck, mail_servers: MailServers) -> None:
    """The control for the test above: a port-25-like listener takes mail for its own domain
    without AUTH, so there is no auth_required finding."""
    run = maildiag(ALICE, *explicit("smtp", HOST, mail_servers.ports.smtp_plain, "plain"))
    assert "auth_required" not in run.categories(), run.report["findings"]
    assert run.check("smtp.auth")["status"] in ("ok", "skip"), run.ids()
    assert_safe(run)


# ------------------------------------------------------------------------------------- logins


def test_wrong_password(maildiag: RunCheck, mail_servers: MailServers) -> None:
    """Every protocol refuses: that is auth_failed everywhere, not protocol_disabled.
    Postfix: '535 5.7.8 Error: authentication failed: (reason unavailable)';
    Dovecot IMAP: 'NO [AUTHENTICATIONFAILED] Authentication failed.';
    Dovecot POP3: '-ERR [AUTH] Authentication failed.'"""
    run = maildiag(ALICE, password=WRONG_PASSWORD)
    for cid in ("smtp.auth", "imap.auth", "pop3.auth"):
        assert run.check(cid)["status"] == "fail", run.ids()
        finding(run, "auth_failed", cid)
    assert "protocol_disabled" not in run.categories()
    assert run.check("smtp.sender")["status"] == "skip", run.ids()
    assert "SASL PLAIN authentication failed" in run.logs["postfix"] or (
        "SASL LOGIN authentication failed" in run.logs["postfix"]
    )
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize("via", ["srv", "starttls"])
def test_sender_not_owned(maildiag: RunCheck, mail_servers: MailServers, via: str) -> None:
    """Postfix takes MAIL FROM and refuses at RCPT TO: '553 5.7.1 <someone-else@example.test>:
    Sender address rejected: not owned by user alice@example.test'."""
    where = (
        ["--only", "smtp"]
        if via == "srv"
        else explicit("smtp", MAIL_HOST, mail_servers.ports.submission, "starttls")
    )
    run = maildiag(ALICE, *where, "--from", NOT_OWNED, password=PASSWORDS[ALICE])
    assert run.check("smtp.auth")["status"] == "ok", run.ids()
    assert run.check("smtp.sender")["status"] == "fail", run.ids()
    f = finding(run, "sender_not_owned", "smtp.sender")
    assert "not owned by user alice@example.test" in f["evidence"], f
    assert "not owned by user alice@example.test" in run.logs["postfix"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_pop3_disabled_for_carol_while_imap_accepts(
    maildiag: RunCheck, mail_servers: MailServers
) -> None:
    """Dovecot answers a POP3-denied login exactly as a wrong password
    ('-ERR [AUTH] Authentication failed.'); IMAP and SMTP accept the same password, so the
    cross-check must call it protocol_disabled."""
    run = maildiag(CAROL, password=PASSWORDS[CAROL])
    for cid in ("imap.auth", "smtp.auth", "smtp.sender"):
        assert run.check(cid)["status"] == "ok", run.ids()
    assert run.check("pop3.auth")["status"] == "fail", run.ids()
    finding(run, "protocol_disabled", "pop3.auth")
    assert "auth_failed" not in run.categories(), run.report["findings"]
    assert "imap-login: Info: Login: user=<carol@example.test>" in run.logs["dovecot"]
    assert "Login: user=<carol@example.test>" not in "".join(
        ln for ln in run.logs["dovecot"].splitlines(True) if "pop3-login" in ln
    )
    assert_exit(run, 2, "fail")
    assert_safe(run)


# -------------------------------------------------------------------------- reachability, DNS


def test_connection_refused(maildiag: RunCheck, mail_servers: MailServers) -> None:
    run = maildiag(ALICE, *explicit("smtp", HOST, mail_servers.ports.refused, "ssl"))
    assert run.check("smtp.connect")["status"] == "fail", run.ids()
    finding(run, "connection_refused", "smtp.connect")
    assert "connection_timeout" not in run.categories()
    for cid in ("smtp.greeting", "smtp.tls", "smtp.capabilities"):
        for c in run.checks(cid):
            assert c["status"] == "skip", run.ids()
    assert run.seconds < 5, f"a refused port took {run.seconds:.1f}s: it must not wait out timeouts"
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_nxdomain(maildiag: RunCheck, mail_servers: MailServers) -> None:
    run = maildiag(f"user@{NXDOMAIN}")
    r = run.report
    assert r["discovery"]["source"] is None and r["servers"] == [], r["discovery"]
    assert run.check("dns")["status"] == "fail", run.ids()
    finding(run, "dns_failure")
    assert f"{NXDOMAIN} is NXDOMAIN" in run.logs["dnsmasq"]  # the answer came from our server
    assert_exit(run, 2, "fail")
    assert_safe(run)


# --------------------------------------------------------------------- what never happens


@pytest.mark.parametrize("output", ["json", "text"])
@pytest.mark.parametrize(
    ("address", "password"),
    [(ALICE, PASSWORDS[ALICE]), (ALICE, WRONG_PASSWORD), (CAROL, PASSWORDS[CAROL])],
    ids=["right-password", "wrong-password", "pop3-denied"],
)
def test_transcripts_never_show_the_password(
    maildiag: RunCheck, mail_servers: MailServers, address: str, password: str, output: str
) -> None:
    run = maildiag(address, "--transcript", password=password, json_output=(output == "json"))
    output_text = run.stdout + run.stderr
    leaked = [f for f in secret_forms(password, address) if f in output_text]
    assert leaked == [], f"password leaked as {leaked}"
    assert run.returncode in (0, 2), run.explain()
    if output == "json":
        smtp_auth = "\n".join(run.check("smtp.auth").get("transcript", []))
        assert "AUTH" in smtp_auth.upper() and "********" in smtp_auth, smtp_auth
        for cid in ("imap.auth", "pop3.auth"):
            lines = "\n".join(run.check(cid).get("transcript", []))
            assert "********" in lines, f"{cid} transcript shows no redacted login:\n{lines}"
    assert_safe(run)


def test_never_sends_and_never_changes_a_mailbox(
    maildiag: RunCheck, mail_servers: MailServers
) -> None:
    """The full password path for alice, read from the servers' side: SMTP stopped at RCPT TO,
    IMAP and POP3 issued no command that changes a mailbox."""
    run = maildiag(ALICE, "--transcript", password=PASSWORDS[ALICE])
    assert run.returncode == 0, run.explain()
    disconnects = [ln for ln in run.logs["postfix"].splitlines() if "disconnect from" in ln]
    assert any("mail=1" in ln and "rcpt=1" in ln for ln in disconnects), disconnects
    assert run.rawlog, "Dovecot recorded no post-login session: did maildiag log in?"
    assert_safe(run)
