"""The held-out corpora in tests/data/heldout_explain*.yaml: real error texts, each with the
category a mail expert gives it and its source, none of them a rule example. Each corpus was
gathered and measured *before* the rules were tuned on it (accuracy then: 79.5%, 72.0%, 77.2%,
87.4%, 61.7%, 70.8%); now the top finding of ``maildiag.explain`` must carry the expected category on
>= 95% of a corpus's texts and on its Russian share (an empty answer counts as wrong). The sixth set
is not tuned on: it measures how the rules generalise (70.8% before the client-string rules, 77.1%
after; Russian 60.4% and 62.5%), so its floors are what it scored, to catch a regression
(bench/eval_explain.py prints it against its "before").

    corpus                       texts  Russian  what
    heldout_explain.yaml          >=120    >=30   issue trackers, provider pages, Thunderbird ru
    heldout_explain_2.yaml        >=150    >=40   the thin areas: clients, dialogs, Russian bounces
    heldout_explain_3.yaml        >=150    >=45   a representative mix (the keyword layer's test)
    heldout_explain_4.yaml        >=150    >=30   fetched only: issue threads, l10n files, MTA code
    heldout_explain_5.yaml         >=80    >=80   Russian only: l10n files (Thunderbird, msmtp, NSS ...)
    heldout_explain_6.yaml        >=140    >=45   issue threads; l10n of programs the client-string
                                                  corpus leaves out (Geary, Balsa, Mailspring ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import maildiag
from maildiag.models import Category
from maildiag.rulebase import RuleBase

DATA = Path(__file__).parent / "data"
CYRILLIC = re.compile("[\u0400-\u04ff]")


@dataclass(frozen=True)
class Corpus:
    name: str
    min_texts: int
    min_russian: int
    russian_accuracy: float
    accuracy: float = 0.95

    def items(self) -> list[dict[str, str]]:
        return yaml.safe_load((DATA / self.name).read_text(encoding="utf-8"))

    def __str__(self) -> str:
        return self.name


CORPORA = [
    Corpus("heldout_explain.yaml", 120, 30, 0.90),
    Corpus("heldout_explain_2.yaml", 150, 40, 0.90),
    Corpus("heldout_explain_3.yaml", 150, 45, 0.95),
    Corpus("heldout_explain_4.yaml", 150, 30, 0.90),
    Corpus("heldout_explain_5.yaml", 80, 80, 0.90),
    Corpus("heldout_explain_6.yaml", 140, 45, 0.62, accuracy=0.77),
]


def accuracy(items: list[dict[str, str]]) -> tuple[float, list[tuple[str, str, str | None]]]:
    wrong = []
    for item in items:
        findings = maildiag.explain(item["text"])
        got = str(findings[0].category) if findings else None
        if got != item["category"]:
            wrong.append((item["text"][:120], item["category"], got))
    return 1 - len(wrong) / len(items), wrong


@pytest.mark.parametrize("corpus", CORPORA, ids=str)
def test_corpus_is_well_formed(corpus: Corpus) -> None:
    items = corpus.items()
    categories = {str(c) for c in Category}
    assert len(items) >= corpus.min_texts
    assert sum(1 for i in items if CYRILLIC.search(i["text"])) >= corpus.min_russian
    assert len({i["text"].strip() for i in items}) == len(items)
    for item in items:
        assert set(item) == {"text", "category", "source"}, item
        assert item["text"].strip() and item["source"].strip(), item
        assert item["category"] in categories, item


def test_no_held_out_text_is_a_rule_example_or_in_two_corpora() -> None:
    rules = RuleBase.load().rules
    examples = {
        e["text"].strip() for r in rules for e in [*r.examples, *r.counterexamples] if e.get("text")
    }
    corpus_file = (Path(__file__).parent / "test_explain_corpus.py").read_text(encoding="utf-8")
    seen: dict[str, str] = {}
    for corpus in CORPORA:
        for item in corpus.items():
            text = item["text"].strip()
            assert text not in examples, f"{corpus}: a rule example: {text[:80]}"
            assert text not in corpus_file, f"{corpus}: in test_explain_corpus.py: {text[:80]}"
            assert text not in seen, f"{corpus}: also in {seen[text]}: {text[:80]}"
            seen[text] = corpus.name


@pytest.mark.parametrize("corpus", CORPORA, ids=str)
def test_accuracy_overall(corpus: Corpus) -> None:
    rate, wrong = accuracy(corpus.items())
    assert rate >= corpus.accuracy, f"{corpus}: {rate:.1%} right; wrong: {wrong}"


@pytest.mark.parametrize("corpus", CORPORA, ids=str)
def test_accuracy_russian(corpus: Corpus) -> None:
    rate, wrong = accuracy([i for i in corpus.items() if CYRILLIC.search(i["text"])])
    assert rate >= corpus.russian_accuracy, f"{corpus}: {rate:.1%} right; wrong: {wrong}"
