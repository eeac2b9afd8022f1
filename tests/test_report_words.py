"""Every word a person reads, in both languages, with counts that need each plural form.

Every ``ui`` template (report, progress, HTML, monitoring, explain, settings) and every rule's
title and steps is rendered in English and Russian with each count param set to 1, 2, 5 and 21
(one, few, many, and the "21 день" case). A number that is followed by a word must be followed by
its ``{X_unit}`` (the word in the form the number takes, from ``plural.X``), or by a word that does
not change with the number (a unit symbol, a preposition); "1 lines", "2 строк" cannot be written.
"""

from __future__ import annotations

import re

import pytest

from maildiag.models import Summary
from maildiag.rulebase import RuleBase, plural_form
from maildiag.rulebase.text import _render

COUNTS = (1, 2, 5, 21)
# params that hold a number of something (the plural.* names are added from the rule base)
COUNTED = {
    "count",
    "lines",
    "errors",
    "groups",
    "messages",
    "bounces",
    "recipients",
    "reasons",
    "resolved",
    "servers",
    "done",
    "total",
    "left",
    "failing",
    "problems",
    "warnings",
    "checks",
    "skipped",
    "targets",
    "passed",
    "of_targets",
    "days",
    "hours",
    "minutes",
    "seconds",
}
# words a number may stand before in any count: unit symbols and prepositions
INVARIANT = {"s", "ms", "of", "more", "skipped", "with", "in", "с", "мс", "из", "в"}
PARAM = re.compile(r"\{([a-z_]+)\}")


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load(cache=False)


def templates(rules: RuleBase) -> list[tuple[str, str, str]]:
    """(where, language, text) of every ui entry and every rule title and step."""
    out = []
    for key, texts in rules.ui.items():
        if key.startswith("plural."):
            continue
        for lang in ("en", "ru"):
            out.append((f"ui {key}", lang, texts[lang]))
    for rule in rules.rules:
        for lang in ("en", "ru"):
            out.append((f"rule {rule.id} title", lang, rule.title[lang]))
            out += [(f"rule {rule.id} step", lang, s) for s in rule.steps[lang]]
    return out


def counted(rules: RuleBase) -> set[str]:
    return COUNTED | {k.removeprefix("plural.") for k in rules.ui if k.startswith("plural.")}


def test_a_count_is_followed_by_its_word_in_the_right_form(rules: RuleBase) -> None:
    names = counted(rules)
    wrong = []
    for where, lang, text in templates(rules):
        for m in re.finditer(r"\{([a-z_]+)\}[ \u00a0]+([^\s{}\[\]()]+)", text):
            name, word = m.group(1), m.group(2).rstrip(".,:;")
            if name not in names or word == "{" + name + "_unit}":
                continue
            if m.group(0).endswith(f"{{{name}_unit}}") or word.lower() in INVARIANT:
                continue
            wrong.append(f"{where} ({lang}): {{{name}}} {word}")
    assert not wrong, "counts without their plural form:\n" + "\n".join(wrong)


def test_every_template_renders_with_every_count(rules: RuleBase) -> None:
    names = counted(rules)
    checked = 0
    for key in rules.ui:
        if key.startswith("plural."):
            continue
        for n in COUNTS:
            for lang in ("en", "ru"):
                params = set(PARAM.findall(rules.ui[key][lang]))
                values = {p: (n if p in names else "x") for p in params if not p.endswith("_unit")}
                text = rules.words(key, lang, **values)
                assert "{" not in text and "}" not in text, (key, lang, text)
                for p in params:
                    if p.endswith("_unit") and p.removesuffix("_unit") in values:
                        forms = rules.ui["plural." + p.removesuffix("_unit")][lang]
                        assert plural_form(n, forms) in text, (key, lang, n, text)
                checked += 1
    for rule in rules.rules:
        params = set(PARAM.findall(" ".join([rule.title["en"], *rule.steps["en"]])))
        for n in COUNTS:
            values = {p: (n if p in names else "x") for p in params if not p.endswith("_unit")}
            for lang in ("en", "ru"):
                # a rule's words as diagnosis renders them: the facts quoted, units chosen
                words = rules._word_params(values, lang)
                for text in (rule.title[lang], *rule.steps[lang]):
                    out = _render(text, words, {})
                    assert not PARAM.search(out), (rule.id, lang, out)
                checked += 1
    assert checked > 1000


def test_plural_entries_have_the_forms_each_language_needs(rules: RuleBase) -> None:
    plurals = {k: v for k, v in rules.ui.items() if k.startswith("plural.")}
    assert len(plurals) >= 12
    for key, texts in plurals.items():
        assert len(texts["en"].split("|")) == 2, key  # one | many
        assert len(texts["ru"].split("|")) == 3, key  # 1, 21 | 2-4, 22 | 5-20, 0, 11-14


@pytest.mark.parametrize(
    ("key", "params", "en", "ru"),
    [
        ("report.verdict.fail", {"problems": 1}, "1 problem", "1 проблема"),
        ("report.verdict.fail", {"problems": 2, "warnings": 1}, "2 problems, 1 warning", None),
        ("report.verdict.fail", {"problems": 5}, "5 problems", "5 проблем"),
        ("report.verdict.fail", {"problems": 21}, "21 problems", "21 проблема"),
        ("report.verdict.warn", {"warnings": 2}, "2 warnings", "2 предупреждения"),
        (
            "report.skipped",
            {"skipped": 5, "reason": "x"},
            "5 checks not run: x",
            "5 проверок не выполнялось: x",
        ),
        (
            "report.skipped",
            {"skipped": 21, "reason": "x"},
            "21 checks not run: x",
            "21 проверка не выполнялась: x",
        ),
        ("log_count", {"lines": 1}, "1 line", "1 строка"),
        ("log_count", {"lines": 2}, "2 lines", "2 строки"),
        ("log_count", {"lines": 5}, "5 lines", "5 строк"),
        ("mailbox_count", {"recipients": 21}, "21 recipients", "21 получатель"),
        ("nagios.problems", {"problems": 2}, "2 problems", "2 проблемы"),
        (
            "nagios.problems_in",
            {"problems": 3, "failing": 1, "of_targets": 21},
            "3 problems in 1 of 21 targets",
            "3 проблемы в 1 из 21 цели",
        ),
        ("nagios.ok", {"what": "a", "passed": 1}, "a: 1 check ok", "a: 1 проверка пройдена"),
        ("html.cert.left", {"days": 2}, "2 days left", "осталось: 2 дня"),
    ],
)
def test_sample_counts_read_naturally(
    rules: RuleBase, key: str, params: dict[str, object], en: str, ru: str | None
) -> None:
    assert rules.words(key, "en", **params) == en
    if ru is not None:
        assert rules.words(key, "ru", **params) == ru


def test_certificate_summary_with_each_count(rules: RuleBase) -> None:
    cases = [(1, "day", "день"), (2, "days", "дня"), (5, "days", "дней"), (21, "days", "день")]
    for n, en, ru in cases:
        summary = Summary("tls.ok", {"version": "TLSv1.3", "days": n})
        assert rules.summary_text(summary, "en").endswith(f"{n} {en}")
        assert rules.summary_text(summary, "ru").endswith(f"{n} {ru}")
