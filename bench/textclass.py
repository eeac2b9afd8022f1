"""A small multinomial naive Bayes text classifier: the candidate statistical last tier of
``explain`` (consulted only when no rule matches), measured by bench/eval_explain.py --loco.

Features are lower-cased words and word pairs (any script: Cyrillic words count as words);
classes are maildiag categories. ``predict`` answers only when the best class's posterior is at
least ``min_posterior`` (default 0.6): a tier that cannot say "I do not know" would turn every
vague text into a confident wrong answer.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORD = re.compile(r"[^\W\d_]{2,}|\d\.\d{1,3}\.\d{1,3}|\b[245]\d\d\b")


def features(text: str) -> list[str]:
    words = WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


@dataclass
class NaiveBayes:
    class_counts: Counter[str] = field(default_factory=Counter)
    feature_counts: dict[str, Counter[str]] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)
    vocabulary: set[str] = field(default_factory=set)
    min_posterior: float = 0.6

    @classmethod
    def train(
        cls, samples: Iterable[tuple[str, str | None]], min_posterior: float = 0.6
    ) -> NaiveBayes:
        nb = cls(min_posterior=min_posterior)
        for text, category in samples:
            if not category:
                continue
            feats = features(text)
            nb.class_counts[category] += 1
            counts = nb.feature_counts.setdefault(category, Counter())
            counts.update(feats)
            nb.totals[category] += len(feats)
            nb.vocabulary.update(feats)
        return nb

    def predict(self, text: str) -> str | None:
        feats = [f for f in features(text) if f in self.vocabulary]
        if not feats or not self.class_counts:
            return None
        n = sum(self.class_counts.values())
        v = len(self.vocabulary)
        scores = {}
        for cat, count in self.class_counts.items():
            counts = self.feature_counts[cat]
            denom = self.totals[cat] + v
            scores[cat] = math.log(count / n) + sum(
                math.log((counts[f] + 1) / denom) for f in feats
            )
        best = max(scores, key=scores.__getitem__)
        top = scores[best]
        posterior = 1 / sum(math.exp(s - top) for s in scores.values())
        return best if posterior >= self.min_posterior else None


def rule_examples() -> list[tuple[str, str]]:
    """Every rule example with its rule's category (the knowledge the rules already hold)."""
    from maildiag.rulebase import RuleBase

    rb = RuleBase.load()
    return [(e["text"], r.category) for r in rb.rules for e in r.examples if e.get("text")]
