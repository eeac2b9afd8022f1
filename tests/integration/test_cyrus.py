"""``maildiag check`` against real Cyrus IMAP and POP3 (cyrus.py), judged by Cyrus's own logs.

The same scenarios as for Dovecot: healthy (implicit TLS and STARTTLS/STLS), wrong password,
the service denied to one user (per user and per service, Cyrus's user_deny), Cyrus's
no-plaintext mode, mode mismatch, bad certificates, never changes a mailbox, no password in any
output. Every run is checked against Cyrus's syslog, its telemetry and its spool
(``assert_safe``): no command after login but LOGOUT/QUIT (and CAPABILITY), no auditlog entry
for a changed message or mailbox, POP3 counted no RETR/DELE, no message file changed, and no
form of the password in maildiag's output or in Cyrus's logs.
"""

from __future__ import annotations

import re

import pytest

from .conftest import CheckRun, RunCheck
from .cyrus import CyrusServer
from .prefix import DAVE, FAMILY_PASSWORDS
from .servers import ALICE, CAROL, HOST, MAIL_HOST, secret_forms
from .test_check_real_servers import WRONG_PASSWORD, assert_exit, explicit, finding

pytestmark = pytest.mark.integration

# what a client may send after logging in, as Cyrus's telemetry records it
ALLOWED_AFTER_LOGIN = {"LOGOUT", "QUIT", "CAPABILITY", "NOOP"}
# auditlog lines that are not a change: the byte counts of a session
AUDIT_CHANGE = re.compile(r"auditlog: (?!traffic\b)(\w+)")


def assert_safe(run: CheckRun) -> None:
    log = run.logs["cyrus"]
    changes = [ln for ln in log.splitlines() if AUDIT_CHANGE.search(ln)]
    assert changes == [], f"Cyrus logged changes to mailboxes: {changes}"
    for ln in log.splitlines():
        if "counts: retr=" in ln:
            assert "retr=<0>" in ln and "dele=<0>" in ln, ln
    assert run.mailboxes_after == run.mailboxes_before, "a message file changed"
    for name, text in run.rawlog.items():
        for ln in text.splitlines():
            m = re.match(r"<\d+<(.*)", ln)  # a line the client sent
            if not m:
                continue
            words = m.group(1).upper().split()
            verb = words[0] if name.split("/")[1].startswith("pop3") else words[1:2]
            verb = verb if isinstance(verb, str) else (verb[0] if verb else "")
            assert verb in ALLOWED_AFTER_LOGIN, f"maildiag sent {m.group(1)!r} after login ({name})"
    if run.password:
        login = next((u for u, p in FAMILY_PASSWORDS.items() if p == run.password), ALICE)
        forms = secret_forms(run.password, login)
        leaked = [f for f in forms if f in run.stdout + run.stderr]
        assert leaked == [], f"the password leaked into maildiag's output as {leaked}"
        logged = [f for f in forms if f in log or any(f in t for t in run.rawlog.values())]
        assert logged == [], "the password is in Cyrus's logs"


def logins(log: str, service: str) -> list[str]:
    """Cyrus's 'login:' (accepted) and 'badlogin:' (refused) lines of one service."""
    return [ln for ln in log.splitlines() if f"/{service}[" in ln and "login: " in ln]


def both(cyrus: CyrusServer, imap: tuple[str, str], pop3: tuple[str, str]) -> list[str]:
    return [
        "--imap",
        f"{MAIL_HOST}:{cyrus.ports[imap[0]]}/{imap[1]}",
        "--pop3",
        f"{MAIL_HOST}:{cyrus.ports[pop3[0]]}/{pop3[1]}",
        "--only",
        "imap,pop3",
    ]


# ------------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize(
    ("imap", "pop3"),
    [(("imaps", "ssl"), ("pop3s", "ssl")), (("imap", "starttls"), ("pop3", "starttls"))],
    ids=["implicit-tls", "starttls"],
)
def test_healthy(
    check_cyrus: RunCheck, cyrus: CyrusServer, imap: tuple[str, str], pop3: tuple[str, str]
) -> None:
    run = check_cyrus(ALICE, *both(cyrus, imap, pop3), password=FAMILY_PASSWORDS[ALICE])
    for svc in ("imap", "pop3"):
        for step in ("connect", "greeting", "tls", "capabilities", "auth"):
            assert run.check(f"{svc}.{step}")["status"] == "ok", run.ids()
    assert [f for f in run.report["findings"] if f["severity"] != "info"] == []
    assert_exit(run, 0, "ok")
    log = run.logs["cyrus"]
    for service in (imap[0], pop3[0]):
        lines = logins(log, service)
        assert len(lines) == 1 and f"{ALICE} plaintext+TLS User logged in" in lines[0], lines
    assert run.rawlog, "Cyrus's telemetry recorded no session: did maildiag log in?"
    assert_safe(run)


# ------------------------------------------------------------------------------------- logins


def test_wrong_password(check_cyrus: RunCheck, cyrus: CyrusServer) -> None:
    """Cyrus IMAP: 'NO Login failed: authentication failure'; POP3: '-ERR [AUTH] Invalid
    login'. Both refuse: auth_failed, not protocol_disabled."""
    run = check_cyrus(
        ALICE, *both(cyrus, ("imaps", "ssl"), ("pop3s", "ssl")), password=WRONG_PASSWORD
    )
    for cid in ("imap.auth", "pop3.auth"):
        assert run.check(cid)["status"] == "fail", run.ids()
        finding(run, "auth_failed", cid)
    assert "protocol_disabled" not in run.categories()
    assert finding(run, "auth_failed", "imap.auth")["evidence"].endswith(
        "NO Login failed: authentication failure"
    )
    for service in ("imaps", "pop3s"):
        lines = logins(run.logs["cyrus"], service)
        assert len(lines) == 1 and "badlogin:" in lines[0] and "authentication failure" in lines[0]
    assert_exit(run, 2, "fail")
    assert_safe(run)


CAROL_DENIED = "-ERR [SYS/TEMP] Access to this service has been blocked"
DAVE_DENIED = "NO Login failed: authorization failure"


@pytest.mark.parametrize("cross_check", [True, False], ids=["with-imap", "alone"])
def test_pop3_denied_for_carol(
    check_cyrus: RunCheck, cyrus: CyrusServer, cross_check: bool
) -> None:
    """user_deny blocks POP3 for carol: Cyrus says so after USER, before the password matters.
    With IMAP accepting the same password, and alone, it is protocol_disabled."""
    where = (
        both(cyrus, ("imaps", "ssl"), ("pop3s", "ssl"))
        if cross_check
        else explicit("pop3", HOST, cyrus.ports["pop3s"], "ssl")
    )
    run = check_cyrus(CAROL, *where, password=FAMILY_PASSWORDS[CAROL])
    assert run.check("pop3.auth")["status"] == "fail", run.ids()
    f = finding(run, "protocol_disabled", "pop3.auth")
    assert f["evidence"] == CAROL_DENIED, f
    assert "auth_failed" not in run.categories() and "other" not in run.categories()
    if cross_check:
        assert run.check("imap.auth")["status"] == "ok", run.ids()
        assert len(logins(run.logs["cyrus"], "imaps")) == 1
    assert logins(run.logs["cyrus"], "pop3s") == []  # never got as far as a login
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize("cross_check", [True, False], ids=["with-pop3", "alone"])
def test_imap_denied_for_dave(check_cyrus: RunCheck, cyrus: CyrusServer, cross_check: bool) -> None:
    """user_deny blocks IMAP for dave: 'NO Login failed: authorization failure' (authoriZation:
    the password was right). With POP3 accepting it, and alone, it is protocol_disabled."""
    where = (
        both(cyrus, ("imaps", "ssl"), ("pop3s", "ssl"))
        if cross_check
        else explicit("imap", HOST, cyrus.ports["imaps"], "ssl")
    )
    run = check_cyrus(DAVE, *where, password=FAMILY_PASSWORDS[DAVE])
    assert run.check("imap.auth")["status"] == "fail", run.ids()
    f = finding(run, "protocol_disabled", "imap.auth")
    assert f["evidence"].endswith(DAVE_DENIED), f
    assert "auth_failed" not in run.categories() and "other" not in run.categories()
    assert f"user '{DAVE}' is denied access to service 'imaps'" in run.logs["cyrus"]
    if cross_check:
        assert run.check("pop3.auth")["status"] == "ok", run.ids()
    assert_exit(run, 2, "fail")
    assert_safe(run)


# ------------------------------------------------------------------------ no plaintext logins


def test_imap_no_plaintext_login(check_cyrus: RunCheck, cyrus: CyrusServer) -> None:
    """Cyrus lists LOGINDISABLED before STARTTLS (and would answer 'NO Login only available
    under a layer'): tls_required, and no LOGIN is sent."""
    run = check_cyrus(
        ALICE,
        *explicit("imap", HOST, cyrus.ports["imap"], "plain"),
        password=FAMILY_PASSWORDS[ALICE],
    )
    f = finding(run, "tls_required", "imap.auth")
    assert "LOGINDISABLED" in f["evidence"], f
    assert "other" not in run.categories(), run.report["findings"]
    assert logins(run.logs["cyrus"], "imap") == [] and run.rawlog == {}
    assert_exit(run, 2, "fail")
    assert_safe(run)


def test_pop3_no_plaintext_login(check_cyrus: RunCheck, cyrus: CyrusServer) -> None:
    """Cyrus answers USER before STLS with '-ERR [AUTH] USER command only available under a
    layer': tls_required with the server's words, nothing ranked above it, no PASS sent."""
    run = check_cyrus(
        ALICE,
        *explicit("pop3", HOST, cyrus.ports["pop3"], "plain"),
        password=FAMILY_PASSWORDS[ALICE],
    )
    auth = run.check("pop3.auth")
    assert auth["findings"], auth
    assert auth["findings"][0]["category"] == "tls_required", auth["findings"]
    assert (
        auth["findings"][0]["evidence"] == "-ERR [AUTH] USER command only available under a layer"
    )
    assert {f["category"] for f in auth["findings"]} == {"tls_required"}, auth["findings"]
    assert logins(run.logs["cyrus"], "pop3") == [] and run.rawlog == {}
    assert_exit(run, 2, "fail")
    assert_safe(run)


# ---------------------------------------------------------------------------------- TLS modes


@pytest.mark.parametrize(
    ("service", "listener", "mode"),
    [
        # a STARTTLS port set up as SSL: Cyrus greets in plain text
        ("imap", "imap", "ssl"),
        # an implicit-TLS port set up without encryption: Cyrus waits silently
        ("pop3", "pop3s", "plain"),
    ],
)
def test_tls_mode_mismatch(
    check_cyrus: RunCheck, cyrus: CyrusServer, service: str, listener: str, mode: str
) -> None:
    run = check_cyrus(ALICE, *explicit(service, HOST, cyrus.ports[listener], mode), timeout=2)
    assert run.check(f"{service}.greeting")["status"] == "fail", run.ids()
    finding(run, "tls_mismatch", f"{service}.greeting")
    assert "connection_timeout" not in run.categories(), run.report["findings"]
    assert_exit(run, 2, "fail")
    assert_safe(run)


@pytest.mark.parametrize(
    ("listener", "category"),
    [
        ("imapsexpired", "cert_expired"),
        ("imapswronghost", "cert_untrusted"),
        ("imapsselfsigned", "cert_untrusted"),
    ],
)
def test_bad_certificate_and_no_password_sent(
    check_cyrus: RunCheck, cyrus: CyrusServer, listener: str, category: str
) -> None:
    run = check_cyrus(
        ALICE,
        *explicit("imap", MAIL_HOST, cyrus.ports[listener], "ssl"),
        password=FAMILY_PASSWORDS[ALICE],
    )
    assert run.check("imap.tls")["status"] == "fail", run.ids()
    assert finding(run, category, "imap.tls")["severity"] == "fail"
    others = {"cert_expired", "cert_untrusted", "clock_skew", "tls_interception"} - {category}
    assert not others & run.categories(), run.categories()
    assert run.check("imap.auth")["status"] != "ok", run.ids()
    assert logins(run.logs["cyrus"], listener) == [], "a login reached an unverified server"
    assert_exit(run, 2, "fail")
    assert_safe(run)


# --------------------------------------------------------------------- what never happens


@pytest.mark.parametrize(
    ("address", "password", "output"),
    [
        (ALICE, FAMILY_PASSWORDS[ALICE], "json"),
        (ALICE, FAMILY_PASSWORDS[ALICE], "text"),
        (ALICE, WRONG_PASSWORD, "json"),
        (CAROL, FAMILY_PASSWORDS[CAROL], "json"),
    ],
    ids=["right-password-json", "right-password-text", "wrong-password-json", "pop3-denied-json"],
)
def test_transcripts_never_show_the_password(
    check_cyrus: RunCheck, cyrus: CyrusServer, address: str, password: str, output: str
) -> None:
    run = check_cyrus(
        address,
        *both(cyrus, ("imap", "starttls"), ("pop3s", "ssl")),
        "--transcript",
        password=password,
        json_output=(output == "json"),
    )
    assert run.returncode in (0, 2), run.explain()
    if output == "json":
        for cid in ("imap.auth", "pop3.auth"):
            lines = "\n".join(run.check(cid).get("transcript", []))
            assert "********" in lines, f"{cid} transcript shows no redacted login:\n{lines}"
    assert_safe(run)
