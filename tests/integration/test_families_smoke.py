"""The Exim and Cyrus harness itself, proven with the standard library's clients (no maildiag).

These pin the exact words the real servers answer (the CLI tests, the scripted peers of
tests/test_server_replies.py and the rule base rely on them), and show that the evidence the
CLI tests read would catch what must never happen: a message sent, a mailbox changed.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import ssl

import pytest

from .cyrus import CyrusServer
from .exim import RCPT_MARKER, EximServer
from .prefix import DAVE, FAMILY_PASSWORDS
from .servers import ALICE, CAROL, DATA_MARKER, HOST, NOT_OWNED

pytestmark = pytest.mark.integration
T = 5  # seconds, every client step


def ctx(server: EximServer | CyrusServer) -> ssl.SSLContext:
    assert server.certs is not None
    return ssl.create_default_context(cafile=str(server.certs.ca_pem))


# ----------------------------------------------------------------------------------------- Exim


def test_exim_submission_words(exim: EximServer) -> None:
    with smtplib.SMTP(HOST, exim.ports["submission"], timeout=T) as s:
        code, text = s.ehlo()
        assert code == 250 and "STARTTLS" in text.decode() and "AUTH" not in text.decode()
        assert s.docmd("AUTH PLAIN") == (503, b"AUTH command used when not advertised")
        assert s.docmd(f"MAIL FROM:<{ALICE}>") == (530, b"5.7.0 Authentication required")
        s.starttls(context=ctx(exim))
        s.ehlo()
        assert s.has_extn("auth") and set(s.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        for user, password in ((ALICE, "wrong"), (DAVE, FAMILY_PASSWORDS[DAVE])):
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                s.login(user, password)
            assert err.value.smtp_code == 535
            assert err.value.smtp_error == b"Incorrect authentication data"
        s.login(ALICE, FAMILY_PASSWORDS[ALICE])
        code, text = s.docmd(f"MAIL FROM:<{NOT_OWNED}>")
        assert code == 553 and b"is not owned by" in text and ALICE.encode() in text, text
        s.rset()
        assert s.docmd(f"MAIL FROM:<{ALICE}>")[0] == 250
        assert s.docmd(f"RCPT TO:<{ALICE}>")[0] == 250


def test_exim_a_real_message_is_visible(exim: EximServer) -> None:
    """What the CLI tests use to prove maildiag never sends, shown to work: DATA leaves a
    marker in Exim's log, the message a '<=' line and a file in the spool."""
    mark = exim.log_mark()
    try:
        with smtplib.SMTP_SSL(HOST, exim.ports["submissions"], timeout=T, context=ctx(exim)) as s:
            s.login(ALICE, FAMILY_PASSWORDS[ALICE])
            s.sendmail(ALICE, [ALICE], b"Subject: harness\r\n\r\nproves the detector works\r\n")
        log = exim.settle(mark)["exim"]
        assert DATA_MARKER in log and re.search(r" <= alice@example\.test .*A=plain:", log), log
        assert f"{RCPT_MARKER}: <{ALICE}> for {ALICE} tls=TLS1." in log
        assert exim.queued_files(), "the message is not in the spool"
    finally:
        exim.remove_queued()
    assert exim.queued_files() == []


# ---------------------------------------------------------------------------------------- Cyrus


def test_cyrus_imap_words(cyrus: CyrusServer) -> None:
    with imaplib.IMAP4(HOST, cyrus.ports["imap"], timeout=T) as m:
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="Login only available under a layer"):
            m.login(ALICE, FAMILY_PASSWORDS[ALICE])
    with imaplib.IMAP4_SSL(HOST, cyrus.ports["imaps"], ssl_context=ctx(cyrus), timeout=T) as m:
        with pytest.raises(imaplib.IMAP4.error, match="Login failed: authentication failure"):
            m.login(ALICE, "wrong")
        with pytest.raises(imaplib.IMAP4.error, match="Login failed: authorization failure"):
            m.login(DAVE, FAMILY_PASSWORDS[DAVE])
        assert m.login(CAROL, FAMILY_PASSWORDS[CAROL])[0] == "OK"
        m.logout()


def test_cyrus_pop3_words(cyrus: CyrusServer) -> None:
    p = poplib.POP3(HOST, cyrus.ports["pop3"], timeout=T)
    try:
        assert "USER" not in p.capa() and "STLS" in p.capa()
        with pytest.raises(poplib.error_proto) as err:
            p.user(ALICE)
        assert err.value.args[0] == b"-ERR [AUTH] USER command only available under a layer"
    finally:
        p.quit()
    p = poplib.POP3_SSL(HOST, cyrus.ports["pop3s"], context=ctx(cyrus), timeout=T)
    p.user(CAROL)  # +OK: the block comes before the password is read, and ends the session
    with pytest.raises(poplib.error_proto) as err:
        p.pass_(FAMILY_PASSWORDS[CAROL])
    assert err.value.args[0] == b"-ERR [SYS/TEMP] Access to this service has been blocked"
    p.close()
    p = poplib.POP3_SSL(HOST, cyrus.ports["pop3s"], context=ctx(cyrus), timeout=T)
    try:
        p.user(ALICE)
        with pytest.raises(poplib.error_proto) as err:
            p.pass_("wrong")
        assert err.value.args[0] == b"-ERR [AUTH] Invalid login"
    finally:
        p.quit()


def test_cyrus_a_mailbox_change_is_visible(cyrus: CyrusServer) -> None:
    """What the CLI tests use to prove maildiag never changes a mailbox, shown to work:
    telemetry records the commands after login, the auditlog a flag change, POP3 its RETRs."""
    rawlogs = set(cyrus.rawlogs())
    mark = cyrus.log_mark()
    with imaplib.IMAP4_SSL(HOST, cyrus.ports["imaps"], ssl_context=ctx(cyrus), timeout=T) as m:
        m.login(CAROL, FAMILY_PASSWORDS[CAROL])
        assert m.select("INBOX") == ("OK", [b"1"])
        m.store("1", "+FLAGS", "(\\Flagged)")
        m.store("1", "-FLAGS", "(\\Flagged)")
        m.logout()
    p = poplib.POP3_SSL(HOST, cyrus.ports["pop3s"], context=ctx(cyrus), timeout=T)
    p.user(ALICE)
    p.pass_(FAMILY_PASSWORDS[ALICE])
    assert p.stat()[0] == 1
    p.retr(1)
    p.quit()
    log = cyrus.settle(mark)["cyrus"]
    new = {k: v for k, v in cyrus.rawlogs().items() if k not in rawlogs}
    carol = "".join(v for k, v in new.items() if k.startswith(CAROL))
    alice = "".join(v for k, v in new.items() if k.startswith(ALICE))
    assert re.search(r"<\d+<\S+ SELECT INBOX", carol) and re.search(r"<\d+<\S+ STORE 1", carol)
    assert re.search(r"<\d+<RETR 1", alice), alice
    assert re.search(r"auditlog: (?!traffic)\w+ .*mailbox=<example\.test!user\.carol>", log), log
    assert "counts: retr=<1>" in log
