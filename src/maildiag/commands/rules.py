"""``maildiag rules lint [DIR]`` and ``maildiag rules test [DIR]``.

Exit codes (the same scale as ``check``):

* 0 — the rule base loads (lint) and every example and counterexample behaves (test);
* 2 — ``test`` only: some examples are not matched by their rule as the best match, or some
  counterexamples are matched by their rule (each failure is listed);
* 3 — the rule base cannot be loaded (``UsageError``): the one-line error names the file and
  the rule.

DIR, when given, is loaded after the built-in rules (and ``MAILDIAG_RULES``), as ``--rules`` is,
so a custom rule is tested against the rules it competes with. Both commands read the YAML files
themselves (never the cache), so what they check is what is on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from maildiag.errors import ExitCode, UsageError
from maildiag.rulebase import Match, Rule, RuleBase, RuleBaseError

if TYPE_CHECKING:
    from maildiag.options import Command


def main(command: Command, raw: Mapping[str, Any]) -> int:
    values = command.checked(raw)
    dirs = [values["directory"]] if values.get("directory") else []
    return lint(dirs) if command.name == "rules lint" else test(dirs)


def _load(dirs: Sequence[str]) -> RuleBase:
    try:
        return RuleBase.load(list(dirs), cache=False)
    except RuleBaseError as exc:
        raise UsageError(str(exc)) from exc


def lint(dirs: Sequence[str]) -> int:
    """Validate schema, regexes, translations and ids; print a one-line summary."""
    rb = _load(dirs)
    files = sorted({r.file for r in rb.rules})
    examples = sum(len(r.examples) for r in rb.rules)
    print(f"ok: {len(rb.rules)} rules in {len(files)} files, {examples} examples")
    return ExitCode.OK


def check_rule(rb: RuleBase, rule: Rule) -> list[str]:
    """Failures of one rule's examples (must be its best match) and counterexamples."""
    problems = []
    for ex in rule.examples:
        matches = _matches(rb, ex)
        best = matches[0].rule.id if matches else None
        if best != rule.id:
            got = f"best match is {best}" if best else "no rule matches"
            problems.append(f"{rule.file}: rule {rule.id}: example {_show(ex)}: {got}")
    for ex in rule.counterexamples:
        matches = _matches(rb, ex)
        if any(m.rule.id == rule.id for m in matches):
            problems.append(f"{rule.file}: rule {rule.id}: counterexample {_show(ex)} matches")
    return problems


def _matches(rb: RuleBase, ex: dict[str, Any]) -> list[Match]:
    """What the one diagnosis path says of an example, in its context."""
    return rb.explain(
        ex["text"],
        signal=ex.get("signal"),
        protocol=ex.get("protocol"),
        provider=ex.get("provider"),
    )


def _show(ex: dict) -> str:  # type: ignore[type-arg]
    text = ex["text"] if len(ex["text"]) <= 90 else ex["text"][:87] + "..."
    extra = ", ".join(f"{k}={ex[k]}" for k in ("signal", "protocol", "provider") if ex.get(k))
    return repr(text) + (f" ({extra})" if extra else "")


def test(dirs: Sequence[str]) -> int:
    """Run every rule's examples; print failures, then the count of examples per category."""
    rb = _load(dirs)
    failures: list[str] = []
    per_category: dict[str, int] = {}
    total = counter = 0
    for rule in rb.rules:
        failures.extend(check_rule(rb, rule))
        per_category[rule.category] = per_category.get(rule.category, 0) + len(rule.examples)
        total += len(rule.examples)
        counter += len(rule.counterexamples)
    for line in failures:
        print(f"FAIL {line}")
    print(f"{total} examples, {counter} counterexamples in {len(rb.rules)} rules")
    width = max(map(len, per_category), default=0)
    for cat, n in sorted(per_category.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {cat:<{width}}  {n}")
    if failures:
        print(f"{len(failures)} failing")
        return ExitCode.FAIL
    print("all examples pass")
    return ExitCode.OK
