"""Bad input gets one clear line and exit 3; never a traceback, never a password in argv."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, run_cli_subprocess

from maildiag import __version__

BAD_INPUT = [
    (["check"], "Missing argument"),
    (["check", "notanaddress"], "not a mail address"),
    (["check", "a@"], "no domain"),
    (["check", "a@b@c.test"], "not a mail address"),
    (["check", "a@example.test", "--smtp", "127.0.0.1:99999"], "port must be"),
    (["check", "a@example.test", "--smtp", "127.0.0.1:0"], "port must be"),
    (["check", "a@example.test", "--imap", "host:abc"], "port must be"),
    (["check", "a@example.test", "--smtp", "127.0.0.1:25/tls"], "mode must be"),
    (["check", "a@example.test", "--ca-file", "/nonexistent/ca.pem"], "no such file"),
    (["check", "a@example.test", "--format", "xml"], "--format xml: must be one of"),
    (["check", "a@example.test", "--only", "smtp,ftp"], "unknown service"),
    (["check", "a@example.test", "--timeout", "0"], "--timeout"),
    (["check", "a@example.test", "--timeout", "abc"], "timeout"),
    (["check", "a@example.test", "--warn-days", "3", "--crit-days", "9"], "--crit-days"),
    (["check", "a@example.test", "--resolver", "dns.example"], "resolver"),
    (["check", "a@example.test", "--password-env", "MAILDIAG_TEST_UNSET_VAR"], "not set"),
    (["check", "a@example.test", "--no-such-option"], "No such option"),
    (["check", "a@example.test", "--fail-on", "maybe"], "--fail-on"),
    (["check", "a@example.test", "--lang", "de"], "--lang"),
    (["check", "a@example.test", "--rules", "/nonexistent/rules"], "not a directory"),
    (["frobnicate"], "No such command"),
]


@pytest.mark.parametrize("args,fragment", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_3(args: list[str], fragment: str) -> None:
    result = run_cli(*args)
    assert result.code == 3, result
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("maildiag: ")
    assert fragment.lower() in lines[0].lower()
    assert "Traceback" not in result.err


def test_a_password_option_does_not_exist_and_is_not_echoed() -> None:
    result = run_cli("check", "a@example.test", "--password=hunter2")
    assert result.code == 3
    assert "hunter2" not in result.err + result.out
    assert "--password-env" in result.err


def test_unreadable_ca_file(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    result = run_cli("check", "a@example.test", "--ca-file", str(bad))
    assert result.code == 3
    assert "not a readable PEM bundle" in result.err


def test_version() -> None:
    result = run_cli("--version")
    assert (result.code, result.out.strip()) == (0, f"maildiag {__version__}")


def test_bare_invocation_prints_help_as_usage_error() -> None:
    result = run_cli_subprocess()
    assert result.code == 3
    assert "Usage: maildiag" in result.err and "check" in result.err


def test_bad_input_in_a_fresh_interpreter_has_no_traceback() -> None:
    result = run_cli_subprocess("check", "a@example.test", "--smtp", "127.0.0.1:70000")
    assert result.code == 3
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_nagios_gets_an_unknown_line_on_stdout_for_bad_input() -> None:
    result = run_cli("check", "not-an-address", "--format", "nagios")
    assert result.code == 3
    assert result.out.startswith("MAILDIAG UNKNOWN - ") and result.out.count("\n") == 1
    assert result.err.startswith("maildiag: ")
