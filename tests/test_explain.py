"""maildiag explain: the Python API, run_explain, log mode, the CLI and its cold path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import as_command

import maildiag
from maildiag import explaining
from maildiag.explaining import explain_log, explain_text, log_message, run_explain
from maildiag.models import EXPLAIN_SCHEMA, Category
from maildiag.rulebase import RuleBase

ROOT = Path(__file__).resolve().parents[1]
MAILDIAG = ROOT / ".venv" / "bin" / "maildiag"


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MAILDIAG_RULES", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    explaining._RULES.clear()


# The Yandex help texts (the seed) and what they mean.
SEED = [
    ("530 5.7.0 Authentication required", "auth_required"),
    ("553 5.7.1 Sender address rejected: Access denied", "auth_required"),
    ("503 5.5.4 Error: send AUTH command first.", "auth_required"),
    ("553 5.7.1 Sender address rejected: not owned by auth user.", "sender_not_owned"),
    ("-ERR Login failure or POP3 disabled, try later.", "protocol_disabled"),
    ("554 5.7.1 Message rejected under suspicion of SPAM", "spam_rejected"),
    ("certificate verify failed: certificate has expired", "cert_expired"),
]


@pytest.mark.parametrize(("text", "category"), SEED)
def test_seed_texts(text: str, category: str) -> None:
    findings = maildiag.explain(text)
    assert findings and findings[0].category == Category(category)
    assert findings[0].category == category  # a str enum compares equal to its code
    f = findings[0]
    assert f.rule and f.title and f.steps and f.severity


def test_yandex_advice_in_russian() -> None:
    (f, *_) = maildiag.explain("-ERR Login failure or POP3 disabled, try later.", lang="ru")
    assert "POP3" in f.title and any("Почтовые программы" in s for s in f.steps)
    (spam, *_) = maildiag.explain(
        "554 5.7.1 Message rejected under suspicion of SPAM; x", lang="ru"
    )
    assert any("не робот" in s for s in spam.steps)
    assert any("CureIt" in s for s in spam.steps)


def test_noisy_pastes() -> None:
    repr_text = (
        "smtplib.SMTPAuthenticationError: (534, b'5.7.9 Application-specific password "
        "required. Learn more at\\n5.7.9  https://support.google.com/mail/?p="
        "InvalidSecondFactor x1sm1.1 - gsmtp')"
    )
    assert maildiag.explain(repr_text)[0].category == "app_password_required"
    trace = (
        'Traceback (most recent call last):\n  File "app.py", line 535, in send\n'
        "    server.login(user, password)\n"
        "smtplib.SMTPAuthenticationError: (535, b'5.7.8 Username and Password not "
        "accepted.')\n"
    )
    assert maildiag.explain(trace)[0].category == "auth_failed"
    log = (
        "Mar  3 10:00:01 mx postfix/smtp[4242]: 4F1A2B3C4D: to=<bob@example.com>, "
        "relay=mx.example.com[192.0.2.1]:25, delay=1, status=bounced (host mx.example.com"
        "[192.0.2.1] said: 550 5.1.1 <bob@example.com>: Recipient address rejected: User "
        "unknown in local recipient table (in reply to RCPT TO command))"
    )
    assert maildiag.explain(log)[0].category == "recipient_unknown"


def test_reply_code_alone() -> None:
    findings = maildiag.explain("552 5.2.2 qwerty zxcvb")
    assert findings[0].rule == "rfc3463.any.2.2" and findings[0].category == "mailbox_full"
    assert "5.2.2" in findings[0].title
    assert maildiag.explain("nothing to see here") == []
    assert maildiag.explain("") == []


def test_explain_text_with_custom_rules() -> None:
    rb = RuleBase.load([ROOT / "examples" / "custom-rules"])
    (f, *_) = explain_text("550 ACME relay: connect through the office VPN", rules=rb)
    assert f.rule == "acme.relay-vpn-only"


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = as_command(run_explain, *args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    text = "553 5.7.1 Sender address rejected: not owned by auth user."
    rc, out, err = run(capsys, text, None, True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and err == ""
    assert doc["schema"] == EXPLAIN_SCHEMA == explaining.EXPLAIN_SCHEMA
    assert doc["input"] == text
    first = doc["findings"][0]
    assert set(first) == {"rule", "category", "severity", "check", "title", "steps", "evidence"}
    assert first["category"] == "sender_not_owned" and first["check"] is None
    # the same keys as Finding.to_json(), in the same order
    assert list(first) == list(maildiag.explain(text)[0].to_json())


def test_run_explain_no_match_is_honest(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "completely unrelated words", None, True, "en", ())
    assert rc == 0 and json.loads(out)["findings"] == []
    rc, out, _ = run(capsys, "completely unrelated words", None, False, "ru", ())
    assert rc == 0 and "Ни одно правило" in out
    rc, out, _ = run(capsys, "250 2.0.0 Ok: queued as 12345", None, False, "en", ())
    assert rc == 0 and "success" in out


def test_run_explain_text_code_only(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "550 5.1.1 glorp", None, False, "en", ())
    assert rc == 0 and "code alone" in out and "5.1.1" in out


def test_run_explain_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("454 4.7.0 Too many login attempts"))
    rc, out, _ = run(capsys, "-", None, True, "en", ())
    assert rc == 0 and json.loads(out)["findings"][0]["category"] == "account_blocked"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("x", None, False, "de", ()), "--lang"),
        ((None, None, False, "en", ()), "nothing to explain"),
        (("x", "log", False, "en", ()), "not both"),
        ((None, "/nonexistent/mail.log", False, "en", ()), "cannot read --file"),
        (("x", None, False, "en", ("/nonexistent/rules",)), "not found"),
    ],
)
def test_run_explain_usage_errors(
    capsys: pytest.CaptureFixture[str], args: tuple[object, ...], needle: str
) -> None:
    rc, out, err = run(capsys, *args)
    assert rc == 3 and out == "" and needle in err and err.count("\n") == 1


def test_default_lang_from_locale(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANG", "ru_RU.UTF-8")
    rc, out, _ = run(capsys, "Relay access denied", None, False, None, ())
    assert rc == 0 and "Сервер отказывается" in out


POSTFIX_LOG = """\
Mar  3 10:00:00 mx postfix/smtpd[100]: connect from unknown[192.0.2.10]
Mar  3 10:00:01 mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from unknown[192.0.2.10]: 554 5.7.1 <x@example.net>: Relay access denied; from=<a@example.org> to=<x@example.net> proto=ESMTP helo=<pc>
Mar  3 10:00:02 mx postfix/smtpd[101]: NOQUEUE: reject: RCPT from unknown[192.0.2.11]: 554 5.7.1 <y@example.net>: Relay access denied; from=<b@example.org> to=<y@example.net> proto=ESMTP helo=<pc2>
Mar  3 10:00:03 mx postfix/smtp[102]: 4F1A2B3C4D: to=<bob@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=1, status=bounced (host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command))
Mar  3 10:00:04 mx postfix/smtp[103]: 5A1A2B3C4E: to=<al@example.com>, relay=none, delay=30, status=deferred (connect to mx.example.org[192.0.2.2]:25: Connection timed out)
Mar  3 10:00:05 mx postfix/smtpd[104]: warning: unknown[192.0.2.77]: SASL LOGIN authentication failed: authentication failure
Mar  3 10:00:06 mx postfix/smtp[105]: 6B1A2B3C4F: to=<c@example.com>, relay=mx[192.0.2.3]:25, delay=1, status=sent (250 2.0.0 Ok)
Mar  3 10:00:07 mx postfix/smtp[106]: 7C1A2B3C40: to=<d@example.com>, relay=none, status=deferred (frobnicated beyond repair)
2024-03-03 10:00:08 1rgXYZ-000ABC-DE ** bob@example.com R=dnslookup T=remote_smtp H=mx.example.com [192.0.2.5]: SMTP error from remote mail server after RCPT TO:<bob@example.com>: 550 5.1.1 User unknown
Mar  3 10:00:09 mx sendmail[107]: 42AB: to=<e@example.com>, delay=00:00:01, mailer=esmtp, pri=1, relay=mx.example.com. [192.0.2.6], dsn=4.0.0, stat=Deferred: Connection refused by mx.example.com.
"""


def test_explain_log_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "mail.log"
    log.write_text(POSTFIX_LOG, encoding="utf-8")
    rc, out, _ = run(capsys, None, str(log), True, "en", ())
    doc = json.loads(out)
    assert rc == 0 and doc["schema"] == EXPLAIN_SCHEMA and doc["input"] == str(log)
    groups = {g["rule"]: g for g in doc["groups"]}
    assert groups["delivery.relay-denied"]["count"] == 2
    assert "Relay access denied" in groups["delivery.relay-denied"]["sample"]
    assert groups["delivery.recipient-unknown"]["count"] == 2  # Postfix and Exim
    assert groups["net.mta-outbound-25"]["count"] == 1  # a relay log line: the MTA's port 25
    assert groups["auth.failed"]["count"] == 1
    assert groups["net.connection-refused"]["count"] == 1
    assert groups[None]["count"] == 1 and groups[None]["category"] is None
    assert doc["lines"] == 10 and doc["errors"] == 8
    assert [g["count"] for g in doc["groups"]] == sorted(
        (g["count"] for g in doc["groups"]), reverse=True
    )
    assert {f["rule"] for f in doc["findings"]} == set(groups) - {None}
    rc, out, _ = run(capsys, None, str(log), False, "ru", ())
    assert rc == 0 and "Прочитано строк: 10" in out and "не распознано" in out


def test_log_message_extraction() -> None:
    assert log_message("Mar  3 10:00:06 mx postfix/smtp[1]: A: status=sent (250 Ok)") is None
    assert log_message("Mar  3 10:00:00 mx postfix/smtpd[1]: connect from x[192.0.2.1]") is None
    msg = log_message(
        "Mar  3 mx postfix/smtp[1]: A: to=<a@b>, status=bounced (host x said: "
        "550 no (in reply to RCPT TO command))"
    )
    assert msg == "host x said: 550 no (in reply to RCPT TO command)"


def test_log_memo_respects_different_words() -> None:
    rb = RuleBase.load()
    lines = [
        "Mar 3 10:00:01 mx postfix/smtp[1]: A1: to=<a@x.example>, status=bounced (host x[192.0.2.1] "
        "said: 552 5.2.2 Mailbox full (in reply to RCPT TO command))",
        "Mar 3 10:00:02 mx postfix/smtp[2]: A2: to=<b@y.example>, status=bounced (host y[192.0.2.2] "
        "said: 552 5.3.4 Message size exceeds fixed limit (in reply to end of DATA command))",
    ]
    report = explain_log(rb, lines, "en")
    assert {g["category"] for g in report["groups"]} == {"mailbox_full", "message_too_large"}


# --------------------------------------------------------------------------- the real command


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(MAILDIAG), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        check=False,
    )


needs_cli = pytest.mark.skipif(not MAILDIAG.exists(), reason="the maildiag script is not installed")


@needs_cli
def test_cli_explain_json() -> None:
    p = _cli("explain", "--json", "535 5.7.8 Error: authentication failed: authentication failure")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["findings"][0]["category"] == "auth_failed"


@needs_cli
def test_cli_usage_errors_exit_3(tmp_path: Path) -> None:
    for args in (("explain", "--lang", "xx", "x"), ("explain", "--file", str(tmp_path / "no"))):
        p = _cli(*args)
        assert p.returncode == 3 and p.stdout == "" and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


@needs_cli
def test_cli_rules_commands() -> None:
    p = _cli("rules", "test")
    assert p.returncode == 0 and "all examples pass" in p.stdout, p.stdout[-2000:] + p.stderr
    p = _cli("rules", "lint", str(ROOT / "examples" / "custom-rules"))
    assert p.returncode == 0 and p.stdout.startswith("ok:")


@needs_cli
def test_cli_rules_dir_option() -> None:
    p = _cli(
        "explain",
        "--json",
        "--rules",
        str(ROOT / "examples" / "custom-rules"),
        "550 ACME relay: connect through the office VPN",
    )
    assert p.returncode == 0 and json.loads(p.stdout)["findings"][0]["rule"] == (
        "acme.relay-vpn-only"
    )


def test_cold_path_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from maildiag.__main__ import main\n"
        "rc = main(['explain', '--json', '535 5.7.8 Error: authentication failed'])\n"
        "heavy = [m for m in ('yaml', 'typer', 'rich', 'click', 'dns', 'maildiag.models',"
        " 'email', 'maildiag.bounce', 'charset_normalizer', 'dataclasses') if m in sys.modules]\n"
        "sys.stderr.write(repr((rc, heavy)))\n"
    )
    env = {**os.environ, "MAILDIAG_CACHE_DIR": str(tmp_path / "c")}
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    p = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert p.stderr == repr((0, [])), p.stderr
