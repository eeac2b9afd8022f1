"""Whole bounce messages: what is evidence (the report) and what is not (headers, returned copy),
one finding per distinct reason, vendor forms, and ``explain --file`` on mbox, maildir and .eml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import as_command

import maildiag
from maildiag import explaining
from maildiag.bounce import parse, recipient_texts
from maildiag.explaining import run_explain
from maildiag.sniff import looks_like_email

SISIMAI = Path(__file__).parent / "data" / "sisimai" / "emails"


@pytest.fixture(scope="module")
def rule_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one YAML parse for the module, not per test


@pytest.fixture(autouse=True)
def _env(rule_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(rule_cache))
    monkeypatch.delenv("MAILDIAG_RULES", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    for var in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    explaining._RULES.clear()


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = as_command(run_explain, *args)
    out, err = capsys.readouterr()
    return rc, out, err


# A Postfix bounce whose own headers and returned message are full of words that mean something
# else (SPF/DKIM failures, spam scores, "dns;" in Reporting-MTA): only the report counts.
NOISY_BOUNCE = """\
Return-Path: <>
Received: from mx.example.org (mx.example.org [192.0.2.1]) by mail.example.net
Authentication-Results: mail.example.net; spf=fail smtp.mailfrom=example.org; dkim=fail
Received-SPF: fail (example.org: domain does not designate 192.0.2.1 as permitted sender)
DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s1; b=AAAA
X-Spam-Checker-Version: SpamAssassin 3.4.6
X-Spam-Status: Yes, score=9.1 required=5.0 tests=BAYES_99
X-Virus-Status: Clean
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: alice@example.net
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

This is a MIME-encapsulated message.

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<bob@example.com>: host mx.example.com[192.0.2.7] said: 550 5.1.1 <bob@example.com>:
    Recipient address rejected: User unknown in local recipient table (in reply to
    RCPT TO command)

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 4F1A2B3C4D
Arrival-Date: Mon,  3 Mar 2025 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; bob@example.com
Original-Recipient: rfc822;bob@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User
    unknown in local recipient table

--B1
Content-Description: Undelivered Message
Content-Type: message/rfc822

Received-SPF: softfail (dkim signature failed, DMARC policy reject)
Authentication-Results: example.org; dmarc=fail; spf=fail
From: alice@example.net
To: bob@example.com
Subject: cheap pills, no spam, virus detected, connection timed out

Our spam filter says the message is too large and the mailbox is full.

--B1--
"""


def test_headers_and_the_returned_message_are_not_evidence() -> None:
    findings = maildiag.explain(NOISY_BOUNCE)
    assert [f.category for f in findings] == ["recipient_unknown"]
    assert "User unknown" in findings[0].evidence
    # the same words as a plain text (no report found) would have said more
    assert len(maildiag.explain(NOISY_BOUNCE.replace("message/delivery-status", "x/y"))) > 0


def test_a_plain_message_is_explained_by_its_words_not_its_headers() -> None:
    message = (
        "From: alice@example.net\nTo: bob@example.com\nSubject: hello\n"
        "Authentication-Results: mx; spf=fail; dkim=fail; dmarc=fail\n"
        "X-Spam-Status: Yes, score=12\n\nSee you tomorrow.\n"
    )
    assert looks_like_email(message)
    assert maildiag.explain(message) == []


TWO_REASONS = """\
From: MAILER-DAEMON@mx.example.org
To: alice@example.net
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="B2"

--B2
Content-Type: text/plain

Delivery failed for three recipients.

--B2
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; bob@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: User unknown

Final-Recipient: rfc822; carol@example.com
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 <carol@example.com>: Mailbox full

Final-Recipient: rfc822; dave@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <dave@example.com>: User unknown

Final-Recipient: rfc822; erin@example.com
Action: delivered
Status: 2.0.0
Diagnostic-Code: smtp; 250 2.0.0 Ok

--B2--
"""


def test_one_finding_per_distinct_reason(capsys: pytest.CaptureFixture[str]) -> None:
    findings = maildiag.explain(TWO_REASONS)
    assert [f.category for f in findings] == ["recipient_unknown", "mailbox_full"]
    rc, out, _ = run(capsys, TWO_REASONS, None, True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and len(doc["findings"]) == 2
    rows = doc["recipients"]
    assert [r["address"] for r in rows] == [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]  # the delivered one is no failure
    assert set(rows[0]) == {
        "address",
        "action",
        "status",
        "remote_mta",
        "diagnostic",
        "rule",
        "category",
    }
    assert [r["category"] for r in rows] == [
        "recipient_unknown",
        "mailbox_full",
        "recipient_unknown",
    ]
    assert rows[1]["status"] == "5.2.2" and rows[1]["action"] == "failed"
    assert rows[1]["diagnostic"] == "552 5.2.2 <carol@example.com>: Mailbox full"
    rc, out, _ = run(capsys, TWO_REASONS, None, False, "en", ())
    assert "failed recipients: 3, distinct reasons: 2" in out
    assert "bob@example.com (5.1.1), dave@example.com (5.1.1)" in out
    assert "carol@example.com (5.2.2)" in out


EXIM = """\
From: Mail Delivery System <Mailer-Daemon@e1.example.org>
To: shironeko@example.jp
Subject: Mail delivery failed: returning message to sender
Date: Fri, 01 Oct 2010 19:15:19 +0900

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  kijitora@example.ed.jp
    SMTP error from remote mail server after MAIL FROM:<shironeko@example.jp> SIZE=1543:
    host mx.example.jp [192.0.2.20]: 550 5.7.1 Access denied

------ This is a copy of the message, including all the headers. ------

Return-path: <shironeko@example.jp>
From: shironeko@example.jp
Subject: relay denied, user unknown, mailbox full

Spam spam spam.
"""


def test_exim_stage_and_reply_are_one_diagnosis() -> None:
    bounce = parse(EXIM)
    assert bounce is not None and not bounce.dsn
    (r,) = bounce.recipients
    assert r.address == "kijitora@example.ed.jp"
    assert "after MAIL FROM:<shironeko@example.jp> SIZE=1543: host mx.example.jp" in r.text
    (f,) = maildiag.explain(EXIM)
    assert f.rule == "bounce.sender-rejected" and f.category == "sender_policy"
    # pasted without the message around it: the same one diagnosis
    lines = EXIM.split("\n")[11:13]
    (g, *_) = maildiag.explain("\n".join(lines))
    assert g.rule == "bounce.sender-rejected"


def test_recipient_texts_of_the_common_layouts() -> None:
    text = (
        "<a@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1 unknown\n"
        "    (in reply to RCPT TO command)\n"
        "\n"
        "<b@example.com>: host mx.example.com[192.0.2.1] said: 552 5.2.2 full\n"
        "----- Transcript of session follows -----\n"
        "550 <c@example.com>... User unknown\n"
        "421 example.org (smtp)... Deferred: Connection timed out\n"
    )
    got = recipient_texts(text, ["a@example.com", "b@example.com", "c@example.com"])
    assert got["a@example.com"].endswith("550 5.1.1 unknown (in reply to RCPT TO command)")
    assert got["b@example.com"].endswith("552 5.2.2 full")  # stops at the separator
    assert got["c@example.com"] == "550 <c@example.com>... User unknown"  # Sendmail's verdict


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("lhost-postfix-01.eml", "recipient_unknown"),  # RFC 3464 report, Postfix
        ("lhost-exim-05.eml", "recipient_unknown"),  # Exim, no report part
        ("lhost-qmail-01.eml", "recipient_unknown"),  # qmail
        ("lhost-gmail-01.eml", "recipient_unknown"),  # Gmail
        ("lhost-office365-01.eml", "recipient_unknown"),  # Microsoft 365, quoted-printable
        ("lhost-exchange2003-07.eml", "recipient_unknown"),  # Exchange 2003
        ("lhost-domino-01.eml", "recipient_unknown"),  # Lotus Domino
        ("lhost-notes-03.eml", "recipient_unknown"),  # Lotus Notes
        ("lhost-courier-01.eml", "recipient_unknown"),  # Courier
        ("lhost-sendmail-01.eml", "recipient_unknown"),  # Sendmail
        ("lhost-yahoo-11.eml", "sender_policy"),  # Yahoo
        ("lhost-x5-01.eml", "recipient_unknown"),  # the report inside a forwarded message
        ("rhost-google-02.eml", "recipient_unknown"),  # a broken MIME boundary
        ("lhost-googlegroups-05.eml", "sender_policy"),  # Google Groups, in German
    ],
)
def test_vendor_forms(name: str, category: str) -> None:
    text = (SISIMAI / name).read_bytes().decode("utf-8", "replace")
    findings = maildiag.explain(text)
    assert findings and findings[0].category == category, [(f.rule, f.evidence) for f in findings]


def test_report_fields_alone() -> None:
    text = (
        "Final-Recipient: rfc822; bob@example.com\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"
    )
    (f,) = maildiag.explain(text)
    assert f.category == "mailbox_full" and f.evidence == "552 5.2.2 Mailbox full"


def _mbox(*messages: str) -> str:
    out = []
    for n, m in enumerate(messages):
        body = "\n".join(">" + ln if ln.startswith("From ") else ln for ln in m.split("\n"))
        out.append(f"From MAILER-DAEMON Mon Mar  3 10:00:0{n} 2025\n{body}\n")
    return "\n".join(out)


PLAIN = "From: alice@example.net\nTo: bob@example.com\nSubject: lunch\n\nFrom here on, noon.\n"


def test_file_counts_bounces_not_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mbox = tmp_path / "bounces.mbox"
    mbox.write_text(_mbox(TWO_REASONS, PLAIN, NOISY_BOUNCE, EXIM), encoding="utf-8")
    rc, out, _ = run(capsys, None, str(mbox), True, "en", ())
    doc = json.loads(out)
    assert rc == 0
    assert (doc["messages"], doc["bounces"], doc["failed_recipients"]) == (4, 3, 5)
    counts = {g["category"]: g["count"] for g in doc["groups"]}
    assert counts == {"recipient_unknown": 3, "mailbox_full": 1, "sender_policy": 1}
    rc, out, _ = run(capsys, None, str(mbox), False, "en", ())
    assert "Messages read: 4, delivery reports: 3, failed recipients: 5" in out

    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1.host:2,S").write_text(TWO_REASONS, encoding="utf-8")
    (maildir / "new" / "2.host").write_text(NOISY_BOUNCE, encoding="utf-8")
    (maildir / "new" / "3.host").write_text(PLAIN, encoding="utf-8")
    rc, out, _ = run(capsys, None, str(maildir), True, "en", ())
    doc = json.loads(out)
    assert (doc["messages"], doc["bounces"], doc["failed_recipients"]) == (3, 2, 4)

    eml = tmp_path / "bounce.eml"
    eml.write_text(NOISY_BOUNCE, encoding="utf-8")
    rc, out, _ = run(capsys, None, str(eml), True, "en", ())
    doc = json.loads(out)
    assert (doc["messages"], doc["bounces"], doc["failed_recipients"]) == (1, 1, 1)
    assert [g["category"] for g in doc["groups"]] == ["recipient_unknown"]


def test_an_empty_maildir_is_nothing_to_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cur").mkdir()
    rc, out, err = run(capsys, None, str(tmp_path), False, "en", ())
    assert rc == 3 and out == "" and "no messages" in err and err.count("\n") == 1


def test_the_email_package_loads_only_for_mail(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import maildiag\n"
        "maildiag.explain('550 5.1.1 <bob@example.com>: User unknown\\nsecond line')\n"
        "first = [m for m in ('email', 'maildiag.bounce') if m in sys.modules]\n"
        f"maildiag.explain(open({str(SISIMAI / 'lhost-postfix-01.eml')!r}).read())\n"
        "second = [m for m in ('email', 'maildiag.bounce') if m in sys.modules]\n"
        "sys.stdout.write(repr((first, second)))\n"
    )
    env = {**os.environ, "MAILDIAG_CACHE_DIR": str(tmp_path / "c")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == repr(([], ["email", "maildiag.bounce"]))


def test_hostile_messages_end_without_a_traceback() -> None:
    head = "From: MAILER-DAEMON@mx.example.org\nTo: a@example.net\nSubject: x\n"
    nested = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(3000)
    )
    # the email package's parser recurses per level: thousands of levels are no bounce
    (f,) = maildiag.explain(head + nested + "Content-Type: text/plain\n\n550 5.1.1 user unknown\n")
    assert f.category == "recipient_unknown"
    html = head + "Content-Type: text/html\n\n"
    assert maildiag.explain(html + "<script>" * 50_000) == []  # linear, not quadratic
    assert maildiag.explain(html + "<a" * 300_000) == []
    blocks = "".join(
        f"Final-Recipient: rfc822; u{i}@example.com\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <u{i}@example.com> user unknown\n\n"
        for i in range(3000)
    )
    report = (
        head + 'Content-Type: multipart/report; boundary="B"\n\n--B\n'
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n" + blocks + "--B--\n"
    )
    bounce = parse(report)
    assert bounce is not None and bounce.truncated and len(bounce.recipients) == 500
    assert [f.category for f in maildiag.explain(report)] == ["recipient_unknown"]


def test_a_message_file_that_cannot_be_read_is_skipped_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from maildiag import explain_mail

    (tmp_path / "1.eml").write_text(TWO_REASONS, encoding="utf-8")
    gone = str(tmp_path / "2.eml")  # listed, then removed before it was read
    monkeypatch.setattr(
        explain_mail, "_maildir_files", lambda path: [str(tmp_path / "1.eml"), gone]
    )
    rc, out, _ = run(capsys, None, str(tmp_path), True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["messages"] == 1 and doc["unreadable"] == 1
    rc, out, _ = run(capsys, None, str(tmp_path), False, "en", ())
    assert "(message files that could not be read and were skipped: 1)" in out
