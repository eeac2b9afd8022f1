"""What never happens in a login check: a leaked password, a sent message, a changed mailbox.

Every run goes through the real CLI (in-process ``run_cli`` and one ``python -m maildiag``
subprocess) against loopback peers that record every line they receive. The leak tests scan
every byte printed — stdout and stderr, in each output format, with ``--transcript`` — for the
password and each base64 form an AUTH exchange carries: PLAIN ``\\0login\\0password``, LOGIN
``base64(password)``, and the ``login\\0login\\0password`` variant.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
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


@pytest.fixture(autouse=True)
def _redaction_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MAILDIAG_TEST_REDACTION=off pytest tests/test_safety_auth.py`` runs this file with the
    masking of what servers echo switched off (only the ``shown=`` form of the lines we send
    stays): every echo test must then fail, which shows that each one can."""
    if os.environ.get("MAILDIAG_TEST_REDACTION") == "off":
        from maildiag.redact import Redactor

        monkeypatch.setattr(Redactor, "reply", lambda self, text: text)
        monkeypatch.setattr(Redactor, "reply_lines", lambda self, lines: list(lines))
        monkeypatch.setattr(Redactor, "__call__", lambda self, text: text)


FORMATS = ("text", "json", "junit", "html", "nagios", "prometheus")
# the formats that show a transcript (the others refuse --transcript: it would show nothing)
TRANSCRIPT_FORMATS = ("text", "json", "junit", "html")


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
    smtp_mode: str = "starttls",
) -> list[str]:
    args = [
        "check",
        ALICE,
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        *(["--transcript"] if fmt in TRANSCRIPT_FORMATS else []),
        "--format",
        fmt,
    ]
    only = []
    if smtp is not None:
        args += ["--smtp", f"127.0.0.1:{smtp}/{smtp_mode}"]
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
    assert any(PASSWORD in line for line in pop3.settled())


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


# -- nothing smuggled onto the wire (CR/LF in a login or a password) ---------------------------

SMUGGLED_LOGIN = "alice\r\nDELE 1\r\nRETR 1"
SMUGGLED_PASSWORD = "pw\r\nDELE 1"


def _commands(lines: list[str]) -> set[str]:
    return {line.split(" ", 1)[0].upper() for line in lines if line}


def test_line_breaks_in_login_or_password_never_reach_a_pop3_server(
    pop3_server: Any, certs: Any, tmp_path: Any
) -> None:
    """Refused before any connection: exit 3, one line that does not quote the secret."""
    pop3 = pop3_server(implicit_tls=True, users={ALICE: PASSWORD})
    attempts = {
        "--login": (["--login", SMUGGLED_LOGIN], ENV),
        "--password-env": ([], {"MAILDIAG_TEST_PW": SMUGGLED_PASSWORD}),
    }
    for name, (extra, env) in attempts.items():
        result = run_cli(*check_args(certs, pop3=pop3.port, extra=tuple(extra)), env=env)
        print(f"{name}: exit {result.code}, POP3 peer received {pop3.received}")
        assert result.code == 3, result.out + result.err
        assert result.err.count("\n") == 1 and result.err.startswith("maildiag: ")
        assert "line break" in result.err
        assert "\r" not in result.err and "\n" not in result.err[:-1]
        if name == "--password-env":  # the secret is never quoted
            assert "DELE" not in result.out + result.err
    # the config file's login: key, likewise
    cfg = tmp_path / "targets.yaml"
    cfg.write_text(
        f'targets:\n  - address: {ALICE}\n    pop3: "127.0.0.1:{pop3.port}/ssl"\n'
        '    only: [pop3]\n    login: "alice\\r\\nDELE 1\\r\\nRETR 1"\n',
        encoding="utf-8",
    )
    result = run_cli("check", "--config", str(cfg), "--no-clock")
    print(f"config login: exit {result.code}, POP3 peer received {pop3.received}")
    assert result.code == 3 and "line break" in result.err, result.err
    assert pop3.connections == 0 and pop3.settled() == []


def test_the_writer_refuses_a_line_break_as_a_last_line_of_defence(
    pop3_server: Any, certs: Any
) -> None:
    """A login or password that skipped validation (built in code, not typed) still cannot
    smuggle a command: the line is refused and the check says so."""
    from test_auth_support import by_check, config, drive, signals, target

    from maildiag.models import Security, Service, Status

    for login, password in ((SMUGGLED_LOGIN, PASSWORD), (ALICE, SMUGGLED_PASSWORD)):
        pop3 = pop3_server(implicit_tls=True, users={ALICE: PASSWORD})
        cfg = config(login=login, password=password, ca_file=str(certs.ca_pem))
        obs = by_check(drive(target(Service.POP3, pop3.port, Security.SSL), cfg))
        print(f"login {login!r}: POP3 peer received {pop3.received}")
        assert not _commands(pop3.settled()) & {"DELE", "RETR"}
        assert not any("DELE" in line for line in pop3.settled())
        auth = obs["pop3.auth"]
        assert auth.status is Status.FAIL
        assert signals(auth) == ["check.internal_error"]
        assert "line break" in str(auth.summary.params)


# -- the password never leaks, in any form a server can echo ------------------------------------


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def leak_forms(password: str, login: str = ALICE) -> list[str]:
    """Every way the password could show up in what maildiag prints: as echoed, and as each
    output format escapes it (written out here, independently of maildiag.redact)."""
    import html
    import json
    from urllib.parse import quote, quote_plus

    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in password)
    forms = {
        password,
        password.upper(),
        password.lower(),
        repr(password)[1:-1],
        ascii(password)[1:-1],
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
        escaped,
        html.escape(password),
        html.escape(password, quote=False),
        quote(password, safe=""),
        quote(password),
        quote_plus(password),
        password.replace("\\", "\\\\").replace('"', '\\"'),
        _b64(password),
        _b64(f"\0{login}\0{password}"),
        _b64(f"{login}\0{password}"),
        _b64(f"{login}\0{login}\0{password}"),
    }
    return sorted(forms)


def assert_not_leaked(result: CliResult, forms: list[str]) -> None:
    printed = result.out + result.err
    assert "********" in printed, "nothing was masked: the echo under test never arrived"
    for form in forms:
        assert form not in printed, f"a form of the password leaked: {form[:4]}..."


# JSON carries everything a run knows (transcripts, data, problems, evidence) and text is what
# a person reads; the other renderers show a subset of the same redacted report, and one echo
# (the split continuation) runs through all four.
LEAK_FORMATS = ("json", "text")


def run_leak(certs: Any, *, forms: list[str], **ports: Any) -> None:
    env_pw = ports.pop("env_pw", None)
    for fmt in LEAK_FORMATS:
        result = run_cli(*check_args(certs, fmt=fmt, **ports), env=env_pw or ENV)
        assert result.code == 2, result.out + result.err
        assert_not_leaked(result, forms)


# Passwords with what escaping steps change: a backslash (repr doubles it), a tab, a no-break
# space and an ESC (the transcript writes them as \x09, \xa0, \x1b).
TRICKY = {
    "backslash": "Tr0ub\\4dor&3-zxq",
    "tab": "Tr0ub\t4dor&3-zxq",
    "nbsp": "Tr0ub\xa04dor&3-zxq",
    "esc": "Tr0ub\x1b4dor&3-zxq",
}


def _pop3_echo(password: str, form: str) -> str:
    from urllib.parse import quote

    cut = "-ERR [AUTH] " + "x" * 180 + " "  # the password crosses the summary's 200th character
    return {
        "raw": f"-ERR [AUTH] you sent {password}",
        "repr": f"{password} is not right",  # not a POP3 status: an error quotes it with repr()
        "upper": f"-ERR [AUTH] YOU SENT {password.upper()}",
        "percent": f"-ERR [AUTH] login failed: pass={quote(password, safe='')}",
        "cut": cut + password + " was refused",
    }[form]


POP3_ECHOES = [
    ("raw", PASSWORD),
    ("repr", TRICKY["backslash"]),
    ("raw", TRICKY["tab"]),
    ("raw", TRICKY["nbsp"]),
    ("raw", TRICKY["esc"]),
    ("upper", PASSWORD),
    ("percent", PASSWORD),
    ("cut", PASSWORD),
]


@pytest.mark.parametrize(
    ("form", "password"),
    POP3_ECHOES,
    ids=["raw", "repr", "tab", "nbsp", "esc", "upper", "percent", "cut-at-200"],
)
def test_no_leak_when_a_pop3_server_echoes_the_password(
    pop3_server: Any, certs: Any, form: str, password: str
) -> None:
    pop3 = pop3_server(implicit_tls=True, users={ALICE: "x"}, fail_text=_pop3_echo(password, form))
    forms = leak_forms(password)
    if form == "cut":  # the part before the 200th character, which a cut-then-mask let through
        forms.append(password[:7])
    run_leak(certs, forms=forms, pop3=pop3.port, env_pw={"MAILDIAG_TEST_PW": password})
    assert any(f"PASS {password}" == line for line in pop3.settled())


def test_no_leak_when_an_imap_server_echoes_the_quoted_password(
    imap_server: Any, certs: Any
) -> None:
    password = 'Tr0ub"4dor\\3-zxq'  # a quote and a backslash: IMAP escapes both
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    imap = imap_server(
        implicit_tls=True,
        users={ALICE: "x"},
        fail_text=f'[AUTHENTICATIONFAILED] you sent LOGIN "{ALICE}" {quoted}',
    )
    forms = [*leak_forms(password), quoted]
    run_leak(certs, forms=forms, imap=imap.port, env_pw={"MAILDIAG_TEST_PW": password})


class SmtpEcho:
    """A scripted SMTP server over implicit TLS: offers ``mechanism``, answers the AUTH exchange
    with ``reply(what_the_client_sent)`` — a list of reply lines."""

    def __init__(self, mechanism: str, reply: Any) -> None:
        self.mechanism = mechanism
        self.reply = reply
        self.challenge = _b64("<1896.697170952@example.test>")

    def __call__(self, peer: Any) -> None:
        peer.send("220 echo.example.test ESMTP")
        while (line := peer.readline()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                peer.send("250-echo.example.test")
                peer.send(f"250 AUTH {self.mechanism}")
            elif verb == "AUTH":
                sent = self.exchange(peer, line)
                if sent is None:
                    return
                for out in self.reply(sent):
                    peer.send(out)
            elif verb == "QUIT":
                peer.send("221 2.0.0 Bye")
                return
            else:
                peer.send("250 2.0.0 Ok")

    def exchange(self, peer: Any, line: str) -> str | None:
        parts = line.split()
        if self.mechanism == "PLAIN":
            return parts[2] if len(parts) > 2 else None
        if self.mechanism == "LOGIN":
            peer.send("334 VXNlcm5hbWU6")
            if peer.readline() is None:
                return None
            peer.send("334 UGFzc3dvcmQ6")
            return peer.readline()
        peer.send(f"334 {self.challenge}")  # CRAM-MD5
        return peer.readline()


def _split(text: str) -> list[str]:
    half = len(text) // 2
    return [f"535-5.7.8 you sent {text[:half]}", f"535 5.7.8 {text[half:]} which is wrong"]


_PLAIN_LOGIN_LOGIN = _b64(f"{ALICE}\0{ALICE}\0{PASSWORD}")
_PLAIN_NO_NUL = _b64(f"{ALICE}\0{PASSWORD}")

SMTP_ECHOES = {
    # a reply whose continuation line cuts the echoed password in two
    "split-continuation": ("PLAIN", lambda sent: _split(PASSWORD)),
    "base64-login": ("LOGIN", lambda sent: [f"535 5.7.8 bad password {sent}"]),
    "plain-with-nul": ("PLAIN", lambda sent: [f"535 5.7.8 bad credentials {sent}"]),
    "plain-login-login": ("PLAIN", lambda sent: [f"535 5.7.8 expected {_PLAIN_LOGIN_LOGIN}"]),
    "plain-without-leading-nul": ("PLAIN", lambda sent: [f"535 5.7.8 {_PLAIN_NO_NUL} is wrong"]),
    "cram-md5": ("CRAM-MD5", lambda sent: [f"535 5.7.8 response {sent} does not match"]),
}


@pytest.mark.parametrize("case", list(SMTP_ECHOES))
def test_no_leak_when_an_smtp_server_echoes_the_credentials(
    line_server: Any, certs: Any, case: str
) -> None:
    mechanism, reply = SMTP_ECHOES[case]
    server = line_server(SmtpEcho(mechanism, reply), tls=certs.valid)
    forms = leak_forms(PASSWORD)
    if case == "split-continuation":
        half = len(PASSWORD) // 2
        forms += [PASSWORD[:half], PASSWORD[half:]]
    formats = FORMATS[:4] if case == "split-continuation" else LEAK_FORMATS
    for fmt in formats:
        args = check_args(certs, fmt=fmt, smtp=server.port, smtp_mode="ssl")
        result = run_cli(*args, env=ENV)
        assert result.code == 2, result.out + result.err
        if case == "cram-md5":  # the response that went out is masked as well
            forms.append(server.received[server.received.index("AUTH CRAM-MD5") + 1])
        assert_not_leaked(result, forms)


# -- the mask does not give the password away -------------------------------------------------


def test_the_mask_covers_an_echo_as_a_word_not_the_same_letters_elsewhere() -> None:
    from maildiag.redact import MASK, Redactor

    alice = Redactor("alice")
    assert alice.reply("-ERR no mailbox alice@example.test") == "-ERR no mailbox alice@example.test"
    assert alice.reply("-ERR password alice is wrong") == f"-ERR password {MASK} is wrong"
    assert alice.reply("-ERR password ALICE.") == f"-ERR password {MASK}."
    # what we print ourselves ("logged in as alice") is not an echo: only encoded forms go
    assert alice("logged in as alice") == "logged in as alice"
    assert alice(f"sent {_b64('alice')}") == f"sent {MASK}"

    code = Redactor("250")
    reply = ["250-mx.example.test", "250 2.1.5 Ok"]
    assert code.reply_lines(reply) == reply  # the status of a reply is no echo
    assert code.reply("535 5.7.8 password 250 refused") == f"535 5.7.8 password {MASK} refused"

    split = Redactor(PASSWORD)
    lines = split.reply_lines(["535-5.7.8 you sent Tr0ub4", "535 5.7.8 dor&3-zxq, wrong"])
    assert lines == [f"535-5.7.8 you sent {MASK}", f"535 5.7.8 {MASK}, wrong"]


# -- a 354 to MAIL or RCPT is no acceptance ---------------------------------------------------


class Smtp354:
    """Logs in anyone, then answers MAIL (or RCPT) with 354: "go ahead with the message"."""

    def __init__(self, at: str) -> None:
        self.at = at

    def __call__(self, peer: Any) -> None:
        peer.send("220 odd.example.test ESMTP")
        while (line := peer.readline()) is not None:
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                peer.send("250-odd.example.test")
                peer.send("250 AUTH PLAIN")
            elif verb == "AUTH":
                peer.send("235 2.7.0 Authentication successful")
            elif verb == self.at:
                peer.send("354 End data with <CR><LF>.<CR><LF>")
            else:
                peer.send("250 2.1.0 Ok")


def test_a_354_to_mail_or_rcpt_is_a_protocol_violation(line_server: Any, certs: Any) -> None:
    """Not "accepted": the check fails, and nothing more is sent — after a 354 the server
    would read any line, even RSET, as the text of a message."""
    for at, password in (("MAIL", True), ("RCPT", True), ("MAIL", False)):
        server = line_server(Smtp354(at), tls=certs.valid)
        result = run_cli(
            *check_args(certs, smtp=server.port, smtp_mode="ssl", password=password), env=ENV
        )
        assert result.code == 2, result.out + result.err
        checks = {c["id"]: c for c in result.json["checks"]}
        check = checks["smtp.sender" if password else "smtp.auth"]
        assert check["status"] == "fail", check
        assert "354" in json.dumps(check["summary"])
        verbs = [line.split(" ", 1)[0].upper() for line in server.received]
        print(f"354 at {at}: the server received {verbs}")
        assert verbs[-1] == at  # the last line it got is the one it answered with 354
