"""The harness itself, proven with the standard library's clients and dnspython (no maildiag).

These pin the exact words the real servers answer, because the CLI tests and the rule base rely
on them: a scripted peer that says something else is testing a server that does not exist.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from .servers import (
    ALICE,
    CAROL,
    DATA_MARKER,
    DOMAIN,
    HOST,
    MAIL_HOST,
    NOT_OWNED,
    NXDOMAIN,
    PASSWORDS,
    SINK,
    MailServers,
)

pytestmark = pytest.mark.integration
T = 5  # seconds, every client step


def ctx(servers: MailServers) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(servers.ca_pem))


def insecure() -> ssl.SSLContext:
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def query(servers: MailServers, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, HOST, port=servers.ports.dns, timeout=T)


# ------------------------------------------------------------------------------------------ DNS


def test_dns_records(mail_servers: MailServers) -> None:
    p = mail_servers.ports
    a = query(mail_servers, MAIL_HOST, "A")
    assert [r.address for rr in a.answer for r in rr] == [HOST]
    mx = query(mail_servers, DOMAIN, "MX")
    assert [(r.preference, r.exchange.to_text()) for rr in mx.answer for r in rr] == [
        (10, MAIL_HOST + ".")
    ]
    expected = {
        "_submissions._tcp": p.submissions,
        "_submission._tcp": p.submission,
        "_imaps._tcp": p.imaps,
        "_imap._tcp": p.imap,
        "_pop3s._tcp": p.pop3s,
        "_pop3._tcp": p.pop3,
    }
    for label, port in expected.items():
        r = query(mail_servers, f"{label}.{DOMAIN}", "SRV")
        got = [(s.target.to_text(), s.port) for rr in r.answer for s in rr]
        assert got == [(MAIL_HOST + ".", port)], label


def test_dns_nxdomain(mail_servers: MailServers) -> None:
    for rdtype in ("A", "MX"):
        r = query(mail_servers, NXDOMAIN, rdtype)
        assert r.rcode() == dns.rcode.NXDOMAIN
    # a known name without that record type is NODATA, not NXDOMAIN
    r = query(mail_servers, MAIL_HOST, "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


# ----------------------------------------------------------------------------------------- SMTP


def test_smtp_plain_port(mail_servers: MailServers) -> None:
    with smtplib.SMTP(HOST, mail_servers.ports.smtp_plain, timeout=T) as s:
        code, banner = s.ehlo("client.example.test")
        assert code == 250
        assert not s.has_extn("starttls") and not s.has_extn("auth")
        assert s.mail("stranger@elsewhere.example") == (250, b"2.1.0 Ok")
        assert s.rcpt(ALICE) == (250, b"2.1.5 Ok")
        code, msg = s.rcpt("someone@elsewhere.example")
        assert (code, msg) == (554, b"5.7.1 <someone@elsewhere.example>: Relay access denied")
        s.rset()


def test_submission_requires_starttls_and_auth(mail_servers: MailServers) -> None:
    port = mail_servers.ports.submission
    with smtplib.SMTP(HOST, port, timeout=T) as s:
        code, greeting = s.ehlo("client.example.test")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        code, msg = s.mail(ALICE)
        assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")
        s.starttls(context=ctx(mail_servers))
        s.ehlo("client.example.test")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        # no AUTH: MAIL FROM passes, Postfix refuses at RCPT TO
        assert s.mail(ALICE) == (250, b"2.1.0 Ok")
        code, msg = s.rcpt(ALICE)
        assert (code, msg) == (
            554,
            b"5.7.1 <alice@example.test>: Recipient address rejected: Access denied",
        )
        s.rset()


def test_submission_logins_and_sender_ownership(mail_servers: MailServers) -> None:
    port = mail_servers.ports.submission
    with smtplib.SMTP(HOST, port, timeout=T) as s:
        s.starttls(context=ctx(mail_servers))
        s.ehlo("client.example.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(ALICE, "wrong-password")
        assert (err.value.smtp_code, err.value.smtp_error) == (
            535,
            b"5.7.8 Error: authentication failed: (reason unavailable)",
        )
    with smtplib.SMTP(HOST, port, timeout=T) as s:
        s.starttls(context=ctx(mail_servers))
        s.ehlo("client.example.test")
        assert s.login(ALICE, PASSWORDS[ALICE])[0] == 235
        # someone else's address: accepted at MAIL FROM, refused at RCPT TO
        assert s.mail(NOT_OWNED) == (250, b"2.1.0 Ok")
        code, msg = s.rcpt(ALICE)
        assert (code, msg) == (
            553,
            b"5.7.1 <someone-else@example.test>: Sender address rejected: "
            b"not owned by user alice@example.test",
        )
        s.rset()
        # carol's address is owned by carol, not alice
        assert s.mail(CAROL)[0] == 250
        code, msg = s.rcpt(ALICE)
        assert code == 553 and b"not owned by user alice@example.test" in msg
        s.rset()
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt(ALICE) == (250, b"2.1.5 Ok")
        s.rset()


def test_submissions_implicit_tls_and_carol_smtp(mail_servers: MailServers) -> None:
    # the good certificate names both mail.example.test and 127.0.0.1
    for server_hostname in (MAIL_HOST, HOST):
        c = ctx(mail_servers)
        raw = socket.create_connection((HOST, mail_servers.ports.submissions), timeout=T)
        with c.wrap_socket(raw, server_hostname=server_hostname) as tls:
            assert tls.recv(512).startswith(b"220 mail.example.test ESMTP")
    s = smtplib.SMTP_SSL(HOST, mail_servers.ports.submissions, timeout=T, context=ctx(mail_servers))
    with s:
        s.ehlo("client.example.test")
        assert s.login(CAROL, PASSWORDS[CAROL])[0] == 235  # POP3 is off for carol, SMTP is not
        assert s.mail(CAROL)[0] == 250
        assert s.rcpt(CAROL)[0] == 250
        s.rset()


@pytest.mark.parametrize(
    ("listener", "server_hostname", "verify_code", "message_part"),
    [
        ("smtp_expired", HOST, 10, "certificate has expired"),
        ("smtp_expired", MAIL_HOST, 10, "certificate has expired"),
        ("smtp_wronghost", HOST, 64, "IP address mismatch"),
        ("smtp_wronghost", MAIL_HOST, 62, "Hostname mismatch"),
        ("smtp_selfsigned", HOST, 18, "self-signed certificate"),
        ("smtp_selfsigned", MAIL_HOST, 18, "self-signed certificate"),
    ],
)
def test_bad_certificates(
    mail_servers: MailServers,
    listener: str,
    server_hostname: str,
    verify_code: int,
    message_part: str,
) -> None:
    port = getattr(mail_servers.ports, listener)
    raw = socket.create_connection((HOST, port), timeout=T)
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        ctx(mail_servers).wrap_socket(raw, server_hostname=server_hostname)
    raw.close()
    assert err.value.verify_code == verify_code
    assert message_part in err.value.verify_message
    # the listener itself works: without verification it greets as SMTP
    raw = socket.create_connection((HOST, port), timeout=T)
    with insecure().wrap_socket(raw, server_hostname=server_hostname) as tls:
        assert tls.recv(512).startswith(b"220 mail.example.test ESMTP")


def test_refused_port(mail_servers: MailServers) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, mail_servers.ports.refused), timeout=T)


# ----------------------------------------------------------------------------------------- IMAP


def test_imap(mail_servers: MailServers) -> None:
    with imaplib.IMAP4(HOST, mail_servers.ports.imap, timeout=T) as m:
        assert m.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1")
        assert "STARTTLS" in m.capabilities
        m.starttls(ssl_context=ctx(mail_servers))
        with pytest.raises(imaplib.IMAP4.error) as err:
            m.login(ALICE, "wrong-password")
        assert str(err.value) == "b'[AUTHENTICATIONFAILED] Authentication failed.'"
        assert m.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
        m.logout()
    with imaplib.IMAP4_SSL(
        HOST, mail_servers.ports.imaps, ssl_context=ctx(mail_servers), timeout=T
    ) as m:
        assert m.login(CAROL, PASSWORDS[CAROL])[0] == "OK"  # IMAP is allowed for carol
        m.logout()


# ----------------------------------------------------------------------------------------- POP3


def test_pop3(mail_servers: MailServers) -> None:
    p = poplib.POP3(HOST, mail_servers.ports.pop3, timeout=T)
    try:
        assert p.getwelcome() == b"+OK Dovecot (Debian) ready."
        assert "STLS" in p.capa()
        p.stls(context=ctx(mail_servers))
        p.user(ALICE)
        assert p.pass_(PASSWORDS[ALICE]).startswith(b"+OK")
    finally:
        p.quit()
    for port, tls in ((mail_servers.ports.pop3s, True), (mail_servers.ports.pop3, False)):
        if tls:
            p = poplib.POP3_SSL(HOST, port, timeout=T, context=ctx(mail_servers))
        else:
            p = poplib.POP3(HOST, port, timeout=T)
            p.stls(context=ctx(mail_servers))
        try:
            p.user(CAROL)
            with pytest.raises(poplib.error_proto) as err:
                p.pass_(PASSWORDS[CAROL])
            # POP3 denied answers exactly like a wrong password
            assert str(err.value) == "b'-ERR [AUTH] Authentication failed.'"
            p.user(ALICE)
            with pytest.raises(poplib.error_proto) as err:
                p.pass_("wrong-password")
            assert str(err.value) == "b'-ERR [AUTH] Authentication failed.'"
        finally:
            p.quit()


# --------------------------------------------------------------------- never-sends evidence


def test_a_real_delivery_is_visible(mail_servers: MailServers) -> None:
    """The evidence the CLI tests use to prove maildiag never sends mail, shown to work:
    a real message leaves a DATA marker in Postfix's log, a queue id and a file in a Maildir."""
    before = mail_servers.mailbox_counts()
    mark = mail_servers.log_mark()
    with smtplib.SMTP(HOST, mail_servers.ports.smtp_plain, timeout=T) as s:
        s.sendmail(
            "harness@elsewhere.example",
            [SINK],
            b"Subject: harness\r\n\r\nproves the detector works\r\n",
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if mail_servers.mailbox_counts()[SINK] > before[SINK]:
            break
        time.sleep(0.05)
    after = mail_servers.mailbox_counts()
    assert after[SINK] == before[SINK] + 1
    assert {k: v for k, v in after.items() if k != SINK} == {
        k: v for k, v in before.items() if k != SINK
    }
    time.sleep(0.1)
    log = mail_servers.logs_since(mark)["postfix"]
    assert DATA_MARKER in log
    assert "status=sent" in log and "qmgr" in log
    assert mail_servers.queued_files() == []


def test_a_mailbox_change_is_visible(mail_servers: MailServers) -> None:
    """The evidence the CLI tests use to prove maildiag never changes a mailbox, shown to work:
    Dovecot records post-login commands in the rawlog and logs every change (mail_log), and
    flags show in the Maildir file names."""
    before = mail_servers.mailbox_snapshot()
    rawlogs = set(mail_servers.rawlogs())
    mark = mail_servers.log_mark()
    with imaplib.IMAP4(HOST, mail_servers.ports.imap, timeout=T) as m:
        m.starttls(ssl_context=ctx(mail_servers))
        m.login(CAROL, PASSWORDS[CAROL])
        assert m.select("INBOX") == ("OK", [b"1"])
        m.store("1", "+FLAGS", "(\\Flagged)")
        m.noop()
        changed = mail_servers.mailbox_snapshot()
        m.store("1", "-FLAGS", "(\\Flagged)")
        m.logout()
    p = poplib.POP3(HOST, mail_servers.ports.pop3, timeout=T)
    p.stls(context=ctx(mail_servers))
    p.user(ALICE)
    p.pass_(PASSWORDS[ALICE])
    assert p.stat()[0] == 1
    p.list()
    p.quit()
    time.sleep(0.2)
    assert changed[CAROL] != before[CAROL] and changed[ALICE] == before[ALICE]
    assert mail_servers.mailbox_snapshot() == before
    new = {k: v for k, v in mail_servers.rawlogs().items() if k not in rawlogs}
    carol = "".join(v for k, v in new.items() if k.startswith(CAROL))
    alice = "".join(v for k, v in new.items() if k.startswith(ALICE))
    assert " SELECT INBOX" in carol and " STORE 1 +FLAGS" in carol
    assert "STAT" in alice and "LIST" in alice
    assert "flag_change: box=INBOX" in mail_servers.logs_since(mark)["dovecot"]


def test_secret_forms_catch_every_encoding() -> None:
    """The leak check looks for these: any AUTH exchange that carries the password contains one."""
    import base64

    from .servers import secret_forms

    pw = PASSWORDS[ALICE]
    forms = secret_forms(pw, ALICE)
    blobs = [
        f"\0{ALICE}\0{pw}",  # AUTH PLAIN
        f"{ALICE}\0{ALICE}\0{pw}",  # AUTH PLAIN with an authorisation identity
        pw,  # AUTH LOGIN's second answer
        f"x\0{pw}",
        f"xy\0{pw}",
    ]
    for blob in blobs:
        encoded = base64.b64encode(blob.encode()).decode()
        assert any(f in encoded for f in forms if f != pw), blob
    assert not any(f in base64.b64encode(b"\0alice@example.test\0other").decode() for f in forms)
