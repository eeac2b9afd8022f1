"""An OAuth2 access token never leaks: not on the command line, not in any output, JSON field,
transcript or finding, in any form a server can echo it.

The peers echo the token back in every form it travels in or an escaping step makes of it: the
token itself, upper-cased, percent-encoded and in base64; the XOAUTH2 and OAUTHBEARER initial
responses in base64 (with and without padding) and decoded (with their ^A separators); the token
inside the JSON of an error challenge; and the token cut in two by a reply's continuation lines.
Every byte printed (stdout and stderr, JSON and text, transcripts on) is scanned for every form.

``MAILDIAG_TEST_REDACTION=off pytest tests/test_safety_oauth2.py`` switches off the masking of
what servers echo (only the ``shown=`` form of the lines we send stays): every echo test must then
fail, which shows that each one can.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import quote

import pytest
from conftest import run_cli, run_cli_subprocess
from peers import Grant, MailboxServerConfig, OAuthConfig, imap_handler, pop3_handler

ALICE = "alice@example.test"
ENV = "MAILDIAG_TEST_TOKEN"
# distinctive, with the characters escaping steps change: "/", "+", "=" (percent-encoding)
TOKEN = "ya29.a0Af/Tok+En-Qx7731Zq=="


@pytest.fixture(autouse=True)
def _redaction_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("MAILDIAG_TEST_REDACTION") == "off":
        from maildiag.redact import Redactor

        monkeypatch.setattr(Redactor, "reply", lambda self, text: text)
        monkeypatch.setattr(Redactor, "reply_lines", lambda self, lines: list(lines))
        monkeypatch.setattr(Redactor, "__call__", lambda self, text: text)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def xoauth2(login: str = ALICE) -> str:
    return f"user={login}\x01auth=Bearer {TOKEN}\x01\x01"


def oauthbearer(port: int, login: str = ALICE) -> str:
    return f"n,a={login},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {TOKEN}\x01\x01"


def leak_forms(port: int) -> list[str]:
    """Every way the token could show up in what maildiag prints, written out here
    independently of maildiag.redact."""
    forms = {TOKEN, TOKEN.upper(), TOKEN.lower(), quote(TOKEN, safe=""), _b64(TOKEN)}
    for raw in (xoauth2(), oauthbearer(port)):
        b64 = _b64(raw)
        forms |= {b64, b64.rstrip("="), raw, raw.replace("\x01", "\\x01")}
        forms.add(json.dumps(raw)[1:-1])  # as JSON writes the ^A separators
    return sorted(forms)


def echo(form: str, port: int) -> str:
    """The text a server echoes the token in."""
    half = len(TOKEN) // 2
    return {
        "raw": f"token {TOKEN} has expired",
        "upper": f"TOKEN {TOKEN.upper()} HAS EXPIRED",
        "percent": f"bad token={quote(TOKEN, safe='')}",
        "base64": f"bad token {_b64(TOKEN)}",
        "xoauth2-base64": f"you sent {_b64(xoauth2())}",
        "xoauth2-unpadded": f"you sent {_b64(xoauth2()).rstrip('=')} which is wrong",
        "xoauth2-decoded": f"you sent {xoauth2()} which is wrong",
        "oauthbearer-base64": f"you sent {_b64(oauthbearer(port))}",
        "oauthbearer-decoded": f"you sent {oauthbearer(port)}",
        "split": f"you sent {TOKEN[:half]}\n{TOKEN[half:]} which is wrong",
    }[form]


FORMS = [
    "raw",
    "upper",
    "percent",
    "base64",
    "xoauth2-base64",
    "xoauth2-unpadded",
    "xoauth2-decoded",
    "oauthbearer-base64",
    "oauthbearer-decoded",
    "split",
]


def assert_not_leaked(printed: str, port: int, extra: tuple[str, ...] = ()) -> None:
    assert "********" in printed, "nothing was masked: the echo under test never arrived"
    for form in (*leak_forms(port), *extra):
        assert form not in printed, f"a form of the token leaked: {form[:12]!r}..."


def run(certs: Any, service: str, port: int, fmt: str) -> str:
    result = run_cli(
        "check",
        ALICE,
        f"--{service}",
        f"127.0.0.1:{port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--transcript",
        "--format",
        fmt,
        "--oauth2-token-env",
        ENV,
        env={ENV: TOKEN},
    )
    assert result.code == 2, result.out + result.err
    return result.out + result.err


# SMTP replies may run over several lines: the split echo goes there; the others rotate over
# the three protocols
PROTOCOL = {
    form: ("smtp", "imap", "pop3")[i % 3] if form != "split" else "smtp"
    for i, form in enumerate(FORMS)
}


@pytest.mark.parametrize("form", FORMS)
def test_no_leak_when_a_server_echoes_the_token(
    form: str, scripted_smtp: Any, line_server: Any, certs: Any
) -> None:
    service = PROTOCOL[form]
    mechanism = "OAUTHBEARER" if form.startswith("oauthbearer") else "XOAUTH2"
    cfg = OAuthConfig(grants={}, mechanisms=(mechanism,), challenge=False)
    if service == "smtp":
        peer, _ = scripted_smtp(oauth=cfg)
        lines = echo(form, peer.port).split("\n")
        cfg.refusal = "\n".join(
            [f"535-5.7.8 {line}" for line in lines[:-1]] + [f"535 5.7.8 {lines[-1]}"]
        )
    else:
        handler = imap_handler if service == "imap" else pop3_handler
        peer = line_server(handler(MailboxServerConfig(oauth=cfg)), tls=certs.valid)
        status = "NO [AUTHENTICATIONFAILED]" if service == "imap" else "-ERR [AUTH]"
        cfg.refusal = f"{status} {echo(form, peer.port)}"
    half = len(TOKEN) // 2
    # the halves a cut-then-mask would let through
    extra = (TOKEN[:half], TOKEN[half:]) if form == "split" else ()
    for fmt in ("json", "text"):
        assert_not_leaked(run(certs, service, peer.port, fmt), peer.port, extra)
    # the peer did receive the token, so there was something to leak
    assert any(_b64(TOKEN)[:8] in line or "AUTH" in line for line in peer.received)


def test_no_leak_when_the_token_comes_back_inside_an_error_challenge(
    line_server: Any, certs: Any
) -> None:
    """A challenge is decoded for the report: a token wrapped in its JSON is masked there, and
    the base64 line in the transcript too."""
    cfg = OAuthConfig(grants={}, mechanisms=("XOAUTH2",), error_fields={"token": TOKEN})
    peer = line_server(imap_handler(MailboxServerConfig(oauth=cfg)), tls=certs.valid)
    for fmt in ("json", "text"):
        printed = run(certs, "imap", peer.port, fmt)
        assert_not_leaked(printed, peer.port)
        challenge = cfg.answers[-1][0]
        assert challenge not in printed  # the base64 that carries the token
    report = json.loads(run(certs, "imap", peer.port, "json"))
    auth = next(c for c in report["checks"] if c["id"] == "imap.auth")
    assert auth["data"]["oauth2_error"]["token"] == "********"
    assert auth["findings"][0]["rule"] == "oauth.token-invalid"  # still diagnosed


def test_no_leak_in_any_format_nor_argv(scripted_smtp: Any, line_server: Any, certs: Any) -> None:
    """Logins that work, every output format, and a fresh interpreter: the token appears nowhere,
    and the process's own command line never carries it (it comes from the environment)."""
    cfg = OAuthConfig(grants={TOKEN: Grant(ALICE)})
    smtp, _ = scripted_smtp(oauth=cfg)
    imap = line_server(imap_handler(MailboxServerConfig(oauth=cfg)), tls=certs.valid)
    pop3 = line_server(pop3_handler(MailboxServerConfig(oauth=cfg)), tls=certs.valid)
    args = [
        "check",
        ALICE,
        *("--smtp", f"127.0.0.1:{smtp.port}/ssl"),
        *("--imap", f"127.0.0.1:{imap.port}/ssl"),
        *("--pop3", f"127.0.0.1:{pop3.port}/ssl"),
        *("--ca-file", str(certs.ca_pem), "--no-clock"),
        *("--oauth2-token-env", ENV),
    ]
    assert TOKEN not in " ".join(args)
    # with the dialogues where a format shows them (--transcript is refused where it shows none)
    for fmt, extra in [
        *((f, ["--transcript"]) for f in ("text", "json", "junit", "html")),
        *((f, []) for f in ("nagios", "prometheus")),
    ]:
        result = run_cli(*args, *extra, "--format", fmt, env={ENV: TOKEN})
        assert result.code == 0, result.out + result.err
        for port in (smtp.port, imap.port, pop3.port):
            for form in leak_forms(port):
                assert form not in result.out + result.err, (fmt, form[:12])
    result = run_cli_subprocess(*args, "--transcript", "--format", "json", env={ENV: TOKEN})
    assert result.code == 0 and TOKEN not in result.out + result.err
    lines = [line for c in json.loads(result.out)["checks"] for line in c.get("transcript", [])]
    assert "C: AUTH XOAUTH2 ********" in lines
    assert any(line.endswith("AUTHENTICATE XOAUTH2 ********") for line in lines)


def test_token_never_in_config_repr() -> None:
    from maildiag.address import parse_address
    from maildiag.options import check_config
    from maildiag.probes.auth import make_plan

    cfg = check_config({"address": ALICE}, password=None, oauth2_token=TOKEN)
    assert TOKEN not in repr(cfg)
    assert TOKEN not in repr(make_plan(cfg, parse_address(ALICE), None))
