"""Dump what the matcher answers for a fixed set of texts, to compare before and after a change.

For every rule example and counterexample (with its signal/protocol/provider), every held-out
text of tests/test_explain_corpus.py and tests/test_explain.py, and the noisy variants the
benchmark uses: ``maildiag.explain(text)`` in en and ru (every field of each Finding), and
``RuleBase.match`` with the example's context (rule, via, rank, code, evidence, groups). Also
the ``--file`` report of the benchmark's synthetic log.

Run: .venv/bin/python bench/dump_explain.py OUT.json [--rules DIR]
``--rules DIR`` reads DIR instead of the built-in rules (a snapshot: others may be editing
rules/ while you measure). Compare two dumps with ``cmp`` or ``diff``.
"""

from __future__ import annotations

import ast
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from maildiag import rulebase  # noqa: E402
from maildiag.explaining import explain_log, explain_text  # noqa: E402


def _test_texts(path: Path) -> list[str]:
    """Every string literal of a test module that looks like an error text."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 8:
            out.append(node.value)
    return out


def _adversarial(texts: list[str]) -> list[str]:
    out = []
    for t in texts[:400]:
        out.append(t * 3)
        out.append(t.replace(" ", "   "))
        out.append(t.upper())
        out.append("\\n".join(t.split(" ", 2)))
        out.append(t[: len(t) // 2] + "\r\n" + t[len(t) // 2 :])
    return out


def main() -> None:
    args = sys.argv[1:]
    if "--rules" in args:
        i = args.index("--rules")
        snap = args[i + 1]
        del args[i : i + 2]
        rulebase.files._builtin_dir = lambda: snap  # type: ignore[assignment]
    out_path = Path(args[0])
    rb = rulebase.RuleBase.load(cache=False)
    from bench_explain import corpus, synthetic_postfix_log

    cases: list[dict[str, str | None]] = []
    for r in rb.rules:
        for ex in (*r.examples, *r.counterexamples):
            cases.append({k: ex.get(k) for k in ("text", "signal", "protocol", "provider")})
    texts = corpus(rb)
    for name in ("test_explain_corpus.py", "test_explain.py", "test_rules.py"):
        texts += _test_texts(ROOT / "tests" / name)
    texts += _adversarial(texts)
    seen = set()
    unique = [t for t in texts if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]

    def finding(f: object) -> list[object]:
        return [
            f.rule,
            f.category.value,
            f.severity.value,
            f.title,
            list(f.steps),  # type: ignore[attr-defined]
            f.evidence,
            list(f.links),
        ]  # type: ignore[attr-defined]

    def match(m: object) -> list[object]:
        return [m.rule.id, m.via, list(m.rank), m.code, m.evidence, m.groups]  # type: ignore[attr-defined]

    doc: dict[str, object] = {"explain": [], "match": []}

    def canonical(ranks: list[tuple[int, ...]], items: list[list[object]]) -> list[object]:
        # rules of equal rank in the order of their ids: the order of a tie is not a result
        order = sorted(range(len(items)), key=lambda n: (ranks.index(ranks[n]), items[n][0]))
        return [[list(ranks[n]), items[n]] for n in order]

    for t in unique:
        ranks = [m.rank for m in rb.explain(t)]
        doc["explain"].append(
            [
                t,
                canonical(ranks, [finding(f) for f in explain_text(t, "en", rb)]),  # type: ignore[attr-defined]
                canonical(ranks, [finding(f) for f in explain_text(t, "ru", rb)]),
            ]
        )
        found = rb.match(t)  # type: ignore[attr-defined]
        doc["match"].append([t, canonical([m.rank for m in found], [match(m) for m in found])])  # type: ignore[attr-defined]
    for c in cases:
        found = rb.match(
            c["text"] or "",
            signal=c["signal"],
            protocol=c["protocol"],  # type: ignore[attr-defined]
            provider=c["provider"],
        )
        doc["match"].append([c, canonical([m.rank for m in found], [match(m) for m in found])])  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        synthetic_postfix_log(log, 20_000)
        with log.open(encoding="utf-8") as fh:
            doc["log_en"] = explain_log(rb, fh, "en")
        with log.open(encoding="utf-8") as fh:
            doc["log_ru"] = explain_log(rb, fh, "ru")
    out_path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    matched = sum(1 for _t, en, _ru in doc["explain"] if en)  # type: ignore[attr-defined]
    print(
        f"{out_path}: {len(unique)} texts explained in en and ru ({matched} with a finding), "
        f"{len(doc['match'])} match calls, {doc['log_en']['lines']} log lines"
    )  # type: ignore[index]


if __name__ == "__main__":
    main()
