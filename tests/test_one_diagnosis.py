"""One diagnosis path: a server reply gets the same category from ``check`` (a probe's problem)
as from ``explain`` (the pasted text), for every rule example and every text of the corpora.

Both ask ``RuleBase.explain``; this test goes through each command's own entry
(``diagnose.finding_for`` for check, ``maildiag.explain`` for explain), so a second path
growing back anywhere between them fails it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import maildiag
from maildiag.diagnose import finding_for
from maildiag.models import Observation, Problem, Security, Service, Status, Summary, Target
from maildiag.rulebase import RuleBase

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load()


def _corpus_texts() -> list[str]:
    texts: list[str] = []
    for path in sorted(DATA.glob("heldout_explain*.yaml")):
        texts += [item["text"] for item in yaml.safe_load(path.read_text(encoding="utf-8"))]
    strings = yaml.safe_load((DATA / "client_strings.yaml").read_text(encoding="utf-8"))
    texts += [s["text"] for s in strings["strings"] if s.get("failure")]
    return texts


def _check_category(rules: RuleBase, text: str, protocol: str | None, provider: str | None) -> str:
    target = Target(Service(protocol), "mx.example.test", 25, Security.SSL) if protocol else None
    check = f"{protocol}.auth" if protocol else "dns"
    obs = Observation(check, Status.FAIL, Summary("auth.refused"), target)
    finding = finding_for(Problem("reply", text), obs, rules, lang="en", provider=provider)
    return str(finding.category)


def _explain_category(text: str) -> str:
    found = maildiag.explain(text)
    return str(found[0].category) if found else "other"  # check falls back to the catch-all


def test_rule_examples_get_one_category(rules: RuleBase) -> None:
    differ = []
    checked = 0
    for rule in rules.rules:
        for ex in rule.examples:
            if not ex["text"] or ex.get("signal") not in (None, "reply"):
                continue
            protocol, provider = ex.get("protocol"), ex.get("provider")
            if protocol or provider:  # the same context on both sides
                found = rules.explain(ex["text"], protocol=protocol, provider=provider)
                expected = str(found[0].category) if found else "other"
            else:
                expected = _explain_category(ex["text"])
            got = _check_category(rules, ex["text"], protocol, provider)
            checked += 1
            if got != expected:
                differ.append((rule.id, ex["text"][:80], got, expected))
    assert checked >= 600
    assert not differ, differ[:10]


def test_corpus_texts_get_one_category(rules: RuleBase) -> None:
    texts = _corpus_texts()
    assert len(texts) >= 1500
    differ = [
        (t[:80], got, want)
        for t in texts
        if (got := _check_category(rules, t, None, None)) != (want := _explain_category(t))
    ]
    assert not differ, differ[:10]


def test_the_reply_from_the_issue(rules: RuleBase) -> None:
    # a 503 after AUTH was not advertised: check said `other`, explain `tls_required`
    text = "503 5.5.1 Error: authentication not enabled"
    assert _check_category(rules, text, "smtp", None) == _explain_category(text)
