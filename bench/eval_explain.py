"""How often ``maildiag.explain`` gives the right category, per corpus, now and before.

    python bench/eval_explain.py                 # every corpus: now vs the recorded "before"
    python bench/eval_explain.py --loco          # also the leave-one-corpus-out table
    python bench/eval_explain.py --record NAME   # record NAME's current numbers as its "before"
    python bench/eval_explain.py --misses NAME   # list NAME's misses (never for a held-out set
                                                 # while rules are being tuned)

Corpora (each scored overall, English and Russian apart):

- ``heldout-N``: tests/data/heldout_explain*.yaml, real error texts labelled by hand;
- ``client-strings``: tests/data/client_strings.yaml, the strings that report a failure;
- ``sisimai-diag``: the first recipient's Diagnostic-Code line of each bounce in
  ../shared/data/sisimai (when present), strict tier of its mapping.yaml.

A text is right when the top finding carries its category (an empty answer is wrong). The
"before" numbers live in bench/explain_before.json: each was recorded once, when the corpus was
new and before any rule was tuned on it.

``--loco`` asks whether a statistical last tier would generalise: for each corpus in turn, a
naive Bayes classifier (bench/textclass.py) is trained on every rule example and on every other
corpus, and consulted only when no rule matches. The table gives the held-out corpus's accuracy
with the rules alone and with the classifier behind them; the classifier alone is shown too.
"""

from __future__ import annotations

import argparse
import email
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

import maildiag  # noqa: E402

DATA = ROOT / "tests" / "data"
SISIMAI = ROOT.parent.parent / "shared" / "data" / "sisimai"
BEFORE = ROOT / "bench" / "explain_before.json"
CYRILLIC = re.compile("[\u0400-\u04ff]")


@dataclass
class Item:
    text: str
    accept: frozenset[str | None]  # categories counted as right (None: no finding)
    lang: str  # "en" or "ru"
    label: str = ""  # where it comes from (for --misses)


@dataclass
class Corpus:
    name: str
    items: list[Item] = field(default_factory=list)


def _lang(text: str) -> str:
    return "ru" if CYRILLIC.search(text) else "en"


def heldout_corpora() -> list[Corpus]:
    out = []
    for path in sorted(DATA.glob("heldout_explain*.yaml")):
        m = re.search(r"_(\d+)\.yaml$", path.name)
        name = f"heldout-{m.group(1) if m else 1}"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        items = [
            Item(d["text"], frozenset([d["category"]]), _lang(d["text"]), d["source"]) for d in data
        ]
        out.append(Corpus(name, items))
    return out


def accepted(label: str | list[str]) -> frozenset[str | None]:
    """The answers a client-string label accepts. ``none`` (a failure that names no cause) is
    right as no finding or as ``other``; a list names the readings of an ambiguous string."""
    out: set[str | None] = set()
    for one in [label] if isinstance(label, str) else label:
        out.update((None, "other") if one == "none" else (one,))
    return frozenset(out)


def client_corpus() -> Corpus | None:
    path = DATA / "client_strings.yaml"
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = [
        Item(d["text"], accepted(d["category"]), d["language"], f"{d['program']} {d['key']}")
        for d in data["strings"]
        if d.get("failure") and d.get("category")
    ]
    return Corpus("client-strings", items)


def _diagnostic_line(raw: bytes) -> str | None:
    """The first recipient's Diagnostic-Code of a bounce, unfolded."""
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        groups = payload if isinstance(payload, list) else []
        for group in groups[1:] or groups:
            diag = group.get("Diagnostic-Code")
            if diag:
                text = re.sub(r"\s*\n\s*", " ", str(diag)).strip()
                return re.sub(r"^[\w-]{1,20};\s*", "", text)
    return None


def sisimai_corpus() -> Corpus | None:
    if not (SISIMAI / "expected.json").exists():
        return None
    expected = json.loads((SISIMAI / "expected.json").read_text())["emails"]
    strict = yaml.safe_load((SISIMAI / "mapping.yaml").read_text())["strict"]
    items = []
    for name, reasons in sorted(expected.items()):
        if not reasons or reasons[0] not in strict:
            continue
        line = _diagnostic_line((SISIMAI / "emails" / name).read_bytes())
        if not line:
            continue
        accept = {c for r in reasons if r in strict for c in strict[r]}
        items.append(Item(line, frozenset(accept), _lang(line), name))
    return Corpus("sisimai-diag", items)


def all_corpora() -> list[Corpus]:
    corpora = heldout_corpora()
    for extra in (client_corpus(), sisimai_corpus()):
        if extra is not None:
            corpora.append(extra)
    return corpora


def rule_answer(text: str) -> str | None:
    findings = maildiag.explain(text)
    return str(findings[0].category) if findings else None


def score(items: list[Item], answer: Callable[[str], str | None]) -> dict[str, list[int]]:
    """{"all"|"en"|"ru": [right, total]}"""
    out: dict[str, list[int]] = {"all": [0, 0], "en": [0, 0], "ru": [0, 0]}
    for item in items:
        ok = answer(item.text) in item.accept
        for key in ("all", item.lang):
            out[key][0] += ok
            out[key][1] += 1
    return out


def _pct(pair: list[int]) -> str:
    right, total = pair
    return f"{right / total:6.1%} of {total:4d}" if total else "      -        "


def load_before() -> dict[str, dict[str, list[int]]]:
    if BEFORE.exists():
        data: dict[str, dict[str, list[int]]] = json.loads(BEFORE.read_text())
        return data
    return {}


def report(corpora: list[Corpus]) -> None:
    before = load_before()
    print(f"{'corpus':16} {'':4} {'now':>15}   {'before':>15}")
    for c in corpora:
        now = score(c.items, rule_answer)
        for key in ("all", "en", "ru"):
            if not now[key][1]:
                continue
            was = before.get(c.name, {}).get(key)
            print(
                f"{c.name if key == 'all' else '':16} {key:4} {_pct(now[key])}   "
                f"{_pct(was) if was else '(not recorded)'}"
            )


def record(corpora: list[Corpus], name: str) -> None:
    before = load_before()
    (c,) = [c for c in corpora if c.name == name]
    before[name] = score(c.items, rule_answer)
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(before.items())]
    BEFORE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"recorded {name}: {before[name]}")


def misses(corpora: list[Corpus], name: str) -> None:
    (c,) = [c for c in corpora if c.name == name]
    for item in c.items:
        got = rule_answer(item.text)
        if got not in item.accept:
            want = "/".join(sorted(str(c) for c in item.accept))
            print(f"{want} <- {got}: {item.label}\n    {item.text[:300]!r}")


def _training_label(item: Item) -> str | None:
    specific = sorted(c for c in item.accept if c and c != "other")
    return None if None in item.accept or not specific else specific[0]


def loco(corpora: list[Corpus], min_posterior: float) -> None:
    from textclass import NaiveBayes, rule_examples

    examples = rule_examples()
    print(
        f"\n{'held out':16} {'n':>5} {'rules':>7} {'rules+NB':>9} {'NB alone':>9}"
        f"  (NB trained on {len(examples)} rule examples + the other corpora;"
        f" answers at posterior >= {min_posterior})"
    )
    for held in corpora:
        train = list(examples)
        for other in corpora:
            if other is not held:
                # a text whose answer may be "no finding" teaches the classifier nothing
                train.extend((i.text, _training_label(i)) for i in other.items)
        nb = NaiveBayes.train(train, min_posterior=min_posterior)

        def both(text: str, nb: NaiveBayes = nb) -> str | None:
            return rule_answer(text) or nb.predict(text)

        r = score(held.items, rule_answer)["all"]
        b = score(held.items, both)["all"]
        a = score(held.items, nb.predict)["all"]
        n = r[1]
        print(
            f"{held.name:16} {n:5d} {r[0] / n:7.1%} {b[0] / n:9.1%} {a[0] / n:9.1%}"
            f"   (no rule matched: {sum(1 for i in held.items if rule_answer(i.text) is None)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loco", action="store_true", help="leave-one-corpus-out table")
    parser.add_argument("--record", metavar="NAME", help="record NAME's numbers as 'before'")
    parser.add_argument("--misses", metavar="NAME", help="list the misses of one corpus")
    parser.add_argument("--only", metavar="NAME", help="score only this corpus")
    parser.add_argument("--min-posterior", type=float, default=0.6, help="NB answers above this")
    args = parser.parse_args()
    corpora = all_corpora()
    if args.only:
        corpora = [c for c in corpora if c.name == args.only]
    if args.record:
        record(corpora, args.record)
        return 0
    if args.misses:
        misses(corpora, args.misses)
        return 0
    report(corpora)
    if args.loco:
        loco(corpora, args.min_posterior)
    return 0


if __name__ == "__main__":
    sys.exit(main())
