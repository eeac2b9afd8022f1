"""Advice that fits the case: every rule, rendered for every one of its examples in both languages,
reads as finished text (no ``{param}``, no ``[[``, no default filler such as "port the port"),
names only maildiag commands that exist, and a few contexts get the advice they need."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

import maildiag
from maildiag.rulebase import Match, RuleBase

COMMANDS = {"check", "explain", "settings", "rules", "exporter"}
# "Run maildiag X", "Запустите maildiag X": X must be a command
COMMAND_USE = re.compile(
    r"(?:\brun|\buse|запустите|выполните|`)\s*maildiag ([a-z][a-z-]{1,20})", re.IGNORECASE
)


@pytest.fixture(scope="module")
def rb() -> RuleBase:
    rules = RuleBase.load(cache=False)
    # every default wording becomes a marker: a rendered text that shows one used a filler
    rules.params = {name: {"en": f"<<{name}>>", "ru": f"<<{name}>>"} for name in rules.params}
    return rules


def renderings(rb: RuleBase) -> Iterator[tuple[str, str, str]]:
    """(rule id, language, rendered title + steps) for every example of every rule."""
    for rule in rb.rules:
        for example in rule.examples:
            text = example.get("text") or ""
            signal = example.get("signal")
            if signal:
                matches: list[Match] = rb.match(
                    text, signal=signal, protocol=example.get("protocol")
                )
            else:
                matches = rb.explain(text)
            for m in matches[:1]:
                for lang in ("en", "ru"):
                    title, steps = rb.render(m, lang=lang)
                    yield m.rule.id, lang, "\n".join([title, *steps])


def test_no_placeholder_or_filler_is_left(rb: RuleBase) -> None:
    bad = sorted(
        {
            (rid, lang, line)
            for rid, lang, text in renderings(rb)
            for line in text.splitlines()
            if "<<" in line or "[[" in line or "]]" in line or re.search(r"\{[a-z_]+\}", line)
        }
    )
    assert not bad, "\n".join(f"{rid} [{lang}]: {line}" for rid, lang, line in bad[:40])


def test_steps_name_only_commands_that_exist(rb: RuleBase) -> None:
    bad = []
    for rule in rb.rules:
        for lang in ("en", "ru"):
            for line in [rule.title[lang], *rule.steps[lang]]:
                for command in COMMAND_USE.findall(line):
                    if command not in COMMANDS:
                        bad.append((rule.id, lang, command))
    assert not bad, bad


def _advice(text: str, lang: str = "en") -> tuple[str, str]:
    (top, *_) = maildiag.explain(text, lang=lang)
    return str(top.category), "\n".join([top.title, *top.steps]).lower()


def test_timeout_without_a_port_names_no_port() -> None:
    category, advice = _advice("Connection timed out")
    assert category == "connection_timeout" and "port the port" not in advice


def test_imap_timeout_gets_no_smtp_port_advice() -> None:
    category, advice = _advice("Connection to server imap.example.com timed out.")
    assert category == "connection_timeout"
    assert "587" not in advice and "port 25 " not in advice and "smtp" not in advice


def test_an_mta_relay_line_is_not_the_mail_programs_problem() -> None:
    line = (
        "postfix/smtp[3288]: connect to gmail-smtp-in.l.google.com[74.125.193.27]:25: "
        "Connection timed out"
    )
    category, advice = _advice(line)
    assert category == "connection_timeout"
    assert not re.search(r"(?:in|of) (?:the|your) mail program|account settings", advice)
    assert "outbound port 25" in advice or "relay" in advice


def test_too_many_login_attempts_is_not_a_sending_limit() -> None:
    category, advice = _advice("454 4.7.0 Too many login attempts, please try again later.")
    assert category == "account_blocked"
    assert "sending limit" not in advice.replace("not a sending limit", "")
    assert "password" in advice


def test_basic_auth_disabled_needs_an_oauth_program_not_an_app_password() -> None:
    category, advice = _advice(
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    )
    assert category == "app_password_required"
    assert "oauth" in advice and not re.search(r"(?:create|use|generate) an app password", advice)


@pytest.mark.parametrize(
    ("text", "provider_word"),
    [
        ("535 Authentication failed", "yandex"),
        ("535 Authentication failed", "gmail"),
        ("Authentication failed", "mail.ru"),
    ],
)
def test_provider_steps_only_when_the_provider_is_known(text: str, provider_word: str) -> None:
    _category, advice = _advice(text)
    assert provider_word not in advice
