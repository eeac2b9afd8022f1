"""The rule base: strict loading, the embedded examples, signal coverage, cache, safety."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from conftest import as_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maildiag.commands import rules as rules_cli
from maildiag.models import Category, Finding, Severity
from maildiag.rulebase import (
    RuleBase,
    RuleBaseError,
    builtin_rules_dir,
    extract_codes,
    normalize_text,
    regex_problem,
    rule_dirs,
)
from maildiag.signals import SIGNALS

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = ROOT / "examples" / "custom-rules"

GOOD_RULE = """
rules:
  - id: t.@RID@
    category: relay_denied
    severity: fail
    match:
      text: ['@PAT@']
    title: {en: "Title", ru: "Заголовок"}
    steps: {en: ["Step"], ru: ["Шаг"]}
    examples: ["@EX@"]
"""


def good(rid: str, pattern: str, example: str, body: str = GOOD_RULE) -> str:
    return body.replace("@RID@", rid).replace("@PAT@", pattern).replace("@EX@", example)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MAILDIAG_RULES", raising=False)
    monkeypatch.delenv("MAILDIAG_NO_CACHE", raising=False)


@pytest.fixture(scope="module")
def rb() -> RuleBase:
    return RuleBase.load(cache=False)


def write_rules(directory: Path, body: str, name: str = "t.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the built-ins


def test_rules_test_passes_and_counts_every_category(capsys: pytest.CaptureFixture[str]) -> None:
    assert rules_cli.test([]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"^(\d+) examples", out, re.M).group(1))  # type: ignore[union-attr]
    assert total >= 300
    counted = dict(re.findall(r"^  (\w+)\s+(\d+)$", out, re.M))
    assert set(counted) == {c.value for c in Category}, "every category has examples"
    assert "all examples pass" in out


def test_lint_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert rules_cli.lint([]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_every_signal_is_explained(rb: RuleBase) -> None:
    for signal in (*SIGNALS, "unexplained"):
        matches = rb.match("", signal=signal) or rb.match("554 5.7.1 refused", signal=signal)
        assert matches, f"no rule explains signal {signal}"
        finding = rb.finding(matches[0], lang="ru", params={})
        assert finding.title and finding.steps


def test_unexplained_catch_all_is_other(rb: RuleBase) -> None:
    (m,) = rb.match("599 weird", signal="unexplained")
    assert m.rule.category == "other"


def test_greeting_rejection_by_code(rb: RuleBase) -> None:
    temp = rb.match("421 4.7.0 Too many connections", signal="greeting.rejected")[0]
    perm = rb.match("554 5.7.1 blocked", signal="greeting.rejected")[0]
    other = rb.match("* BYE shutting down", signal="greeting.rejected")[0]
    assert (temp.category, perm.category, other.category) == (
        "rate_limited",
        "ip_blocklisted",
        "other",
    )


def test_signal_rule_quotes_params(rb: RuleBase) -> None:
    m = rb.match("", signal="connect.refused")[0]
    f = rb.finding(
        m, lang="en", params={"host": "smtp.example.test", "port": 465}, check="smtp.connect"
    )
    assert isinstance(f, Finding) and f.check == "smtp.connect"
    assert "465" in f.title and "smtp.example.test" in f.title
    bare = rb.finding(m, lang="en", params={})
    assert "{" not in bare.title and "[[" not in bare.title


def test_missing_params_render_harmlessly(rb: RuleBase) -> None:
    for r in rb.rules:
        m = rb.match("", signal=next(iter(r.signals)))[0] if r.signals else None
        if m is None:
            continue
        for lang in ("en", "ru"):
            title, steps = rb.render(m, lang=lang, params={"unrelated": 1})
            for text in (title, *steps):
                assert "[[" not in text and "]]" not in text


def test_clock_skew_title(rb: RuleBase) -> None:
    m = rb.match("", signal="clock.skew")[0]
    f = rb.finding(m, lang="en", params={"offset_human": "3 days", "direction": "behind"})
    assert f.category is Category.CLOCK_SKEW and "3 days behind" in f.title


def test_auth_required_is_info_and_names_programs(rb: RuleBase) -> None:
    m = rb.match("530 5.7.0 Authentication required", signal="auth.required")[0]
    f = rb.finding(m, lang="en")
    assert f.severity is Severity.INFO
    text = " ".join(f.steps)
    for program in ("Outlook", "Thunderbird", "The Bat!", "Apple Mail"):
        assert program in text


def test_provider_rule_wins_only_when_provider_known(rb: RuleBase) -> None:
    text = "530 5.7.0 Authentication required"
    assert rb.match(text)[0].rule.id == "auth.smtp-auth-required"
    assert rb.match(text, provider="yandex")[0].rule.id == "yandex.smtp-auth-off"
    assert rb.match(text, provider="gmail")[0].rule.id == "auth.smtp-auth-required"


def test_ranking_enhanced_beats_basic(rb: RuleBase) -> None:
    levels = [m.rank[4] for m in rb.match("552 5.2.2 zzz qqq")]
    assert levels == sorted(levels, reverse=True) and levels[0] == 2


def test_protocol_filter(rb: RuleBase) -> None:
    assert all(
        not m.rule.protocols or "imap" in m.rule.protocols
        for m in rb.match("535 5.7.8 Authentication failed", protocol="imap")
    )


# --------------------------------------------------------------------------- strict loading


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            GOOD_RULE.replace("severity: fail", "severity: fail\n    colour: red"),
            "unknown key 'colour'",
        ),
        (GOOD_RULE.replace("category: relay_denied", "category: nope"), "unknown category"),
        (GOOD_RULE.replace('ru: "Заголовок"', 'de: "Titel"'), "unknown language 'de'"),
        (GOOD_RULE.replace(', ru: ["Шаг"]', ""), "missing the ru translation"),
        (GOOD_RULE.replace("@PAT@", "a(b"), "does not compile"),
        (GOOD_RULE.replace("@PAT@", "x.*y"), "unbounded repeat"),
        (GOOD_RULE.replace("@PAT@", "(?:a{1,5}){1,9}b"), "nested quantifiers"),
        (
            GOOD_RULE.replace("text: ['@PAT@']", "text: ['@PAT@']\n      signal: [nope.x]"),
            "unknown signal",
        ),
        (GOOD_RULE.replace('examples: ["@EX@"]', "examples: []"), "at least one example"),
        (GOOD_RULE + GOOD_RULE.replace("rules:\n", ""), "duplicate id"),
        ("rules:\n  - id: x\n    category: [", "YAML error"),
        ("rulez: []\n", "unknown top-level key 'rulez'"),
        (
            GOOD_RULE.replace("severity: fail", "severity: fail\n    fallback: maybe"),
            "fallback must be true or false",
        ),
    ],
)
def test_load_errors_name_file_and_rule(tmp_path: Path, body: str, needle: str) -> None:
    body = good("one", "zebra", "zebra", body)
    path = write_rules(tmp_path / "r", body)
    with pytest.raises(RuleBaseError) as exc:
        RuleBase.load([tmp_path / "r"], cache=False)
    message = str(exc.value)
    assert needle in message and str(path) in message and "\n" not in message
    if "YAML" not in needle and "top-level" not in needle:
        assert "t.one" in message


def test_lint_and_test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_rules(
        tmp_path / "bad", good("a", "zz", "zz").replace("category: relay_denied", "category: x")
    )
    assert as_command(rules_cli.lint, [str(bad.parent)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("maildiag: ") and "t.a" in err and err.count("\n") == 1
    failing = write_rules(tmp_path / "fail", good("b", "zebra", "no stripes here"))
    assert rules_cli.test([str(failing.parent)]) == 2
    assert "FAIL" in capsys.readouterr().out
    ok = write_rules(tmp_path / "ok", good("c", "zebra crossing", "550 zebra crossing closed"))
    assert rules_cli.test([str(ok.parent)]) == 0


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleBaseError, match="not found"):
        RuleBase.load([tmp_path / "absent"], cache=False)


def test_user_dir_wins_over_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "-ERR Login failure or POP3 disabled, try later."
    assert (
        "ACME"
        not in RuleBase.load(cache=False)
        .finding(RuleBase.load(cache=False).match(text)[0], lang="en")
        .title
    )
    custom = RuleBase.load([CUSTOM], cache=False)
    assert "ACME" in custom.finding(custom.match(text)[0], lang="en").title
    assert custom.match("550 ACME relay: connect through the office VPN")[0].rule.id == (
        "acme.relay-vpn-only"
    )
    monkeypatch.setenv("MAILDIAG_RULES", os.pathsep.join(["", str(CUSTOM)]))
    assert [str(p) for p in rule_dirs()][-1] == str(CUSTOM)
    assert RuleBase.load(cache=False).get("acme.relay-vpn-only") is not None
    assert rules_cli.test([str(CUSTOM)]) == 0


def test_builtin_dir_is_the_repository_rules() -> None:
    assert builtin_rules_dir() == ROOT / "rules"


def test_providers_directory_is_not_read(rb: RuleBase) -> None:
    assert all("/providers/" not in r.file for r in rb.rules)


# --------------------------------------------------------------------------- the cache


def test_cache_written_reused_and_invalidated(tmp_path: Path) -> None:
    extra = write_rules(tmp_path / "extra", good("d", "quokka", "quokka"))
    first = RuleBase.load([extra.parent])
    assert not first.from_cache and list((tmp_path / "cache").glob("rules-*.marshal"))
    second = RuleBase.load([extra.parent])
    assert second.from_cache and second.get("t.d") is not None
    assert [m.rule.id for m in second.match("a quokka!")] == ["t.d"]
    extra.write_text(extra.read_text().replace("quokka", "wombat"), encoding="utf-8")
    os.utime(extra, ns=(1, 1))  # a different mtime (and size) whatever the clock says
    third = RuleBase.load([extra.parent])
    assert not third.from_cache and [m.rule.id for m in third.match("a wombat")] == ["t.d"]


def test_cache_tolerates_garbage_and_read_only_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RuleBase.load()
    for f in (tmp_path / "cache").glob("rules-*"):
        f.write_bytes(b"\x00garbage")
    assert not RuleBase.load().from_cache
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(ro / "sub"))
        assert RuleBase.load().match("Relay access denied")
    finally:
        ro.chmod(0o700)
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", "/dev/null/not-a-dir")
    assert RuleBase.load().match("Relay access denied")


# --------------------------------------------------------------------------- text handling


def test_multiline_reply_is_joined() -> None:
    text = (
        "535-5.7.8 Username and Password not accepted. Learn more at\n"
        "535 5.7.8  https://support.google.com/mail/?p=BadCredentials"
    )
    assert normalize_text(text).count("\n") == 0
    escaped = "b'5.7.8 Username and Password not accepted. Learn more at\\n5.7.8  https://x'"
    assert "\n5.7.8" not in normalize_text(escaped)


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("535 5.7.8 Error", ("535", "5.7.8")),
        ("(535, b'5.7.8 Username')", ("535", "5.7.8")),
        ("connect to port 587 failed", (None, None)),
        ("File smtplib.py, line 550, in login", (None, None)),
        ("host [209.85.1.2] said: 550-5.1.1 no", ("550", "5.1.1")),
        ("Python 3.11.5 on 5.10.12", (None, None)),
    ],
)
def test_extract_codes(text: str, codes: tuple[str | None, str | None]) -> None:
    assert extract_codes(text) == codes


def test_rule_regexes_are_all_safe(rb: RuleBase) -> None:
    for r in rb.rules:
        for src in (*r.text, *r.unless):
            assert regex_problem(src) is None, (r.id, src)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=3000))
def test_matcher_survives_any_text(text: str) -> None:
    rb = RuleBase.load()
    for m in rb.match(text):
        rb.finding(m, lang="ru")


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,
        "1" * 100_000,
        "1." * 50_000,
        "5.7." * 30_000,
        " " * 100_000,
        ("authentication " * 10_000),
        "\\n" * 50_000,
        "550-" * 40_000,
    ],
)
def test_matcher_handles_adversarial_input(text: str) -> None:
    RuleBase.load().match(text)


# --------------------------------------------------------------------------- interception


def test_interception_products() -> None:
    from maildiag.probes.tls import match_product

    products = RuleBase.load().interception
    names = {p for _, p in products}
    for expected in (
        "Kaspersky",
        "ESET",
        "Avast",
        "Bitdefender",
        "Dr.Web",
        "Zscaler",
        "Fortinet FortiGate",
        "Netskope",
        "Cisco Umbrella",
        "Sophos",
    ):
        assert expected in names
    assert (
        match_product(["CN=Kaspersky Anti-Virus Personal Root Certificate"], products)
        == "Kaspersky"
    )
    assert match_product(["CN=R3, O=Let's Encrypt"], products) is None


def test_clock_params_read_in_the_language_of_the_finding() -> None:
    from maildiag.probes.clock import skew_params
    from maildiag.rulebase import RuleBase

    rules = RuleBase.load()
    match = rules.match("", signal="clock.skew")[0]
    params = skew_params(-302400, "sntp:127.0.0.1:123")
    assert (
        rules.render(match, lang="ru", params=params)[0]
        == "Часы компьютера идут неверно: отстают на 3 дня 12 часов"
    )
    assert (
        rules.render(match, lang="en", params=params)[0]
        == "Your computer's clock is wrong: 3 days 12 hours behind"
    )


def test_yo_and_ye_are_the_same_letter_to_the_rules() -> None:
    from maildiag.rulebase import normalize_text

    assert normalize_text("Доступ отключён, ЁЖИК") == "Доступ отключен, ЕЖИК"
    from maildiag import explain

    with_yo = explain("Ящик заблокирован: доступ по протоколу IMAP отключён")
    with_ye = explain("Ящик заблокирован: доступ по протоколу IMAP отключен")
    assert with_yo and [f.rule for f in with_yo] == [f.rule for f in with_ye]


def test_the_keyword_layer_speaks_only_when_no_specific_rule_did(rb: RuleBase) -> None:
    """``fallback: true`` rules (rules/keywords.yaml) run only when no other text rule matched."""
    alone = rb.match("Your email address and password do not match.")
    assert alone and alone[0].rule.fallback and alone[0].rule.category == "auth_failed"
    specific = rb.match("535 5.7.8 Error: authentication failed: your password does not match")
    assert specific and not any(m.rule.fallback for m in specific)
    assert specific[0].rule.category == "auth_failed"
