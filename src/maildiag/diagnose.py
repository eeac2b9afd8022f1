"""Observations in, diagnosed check results and findings out.

Each ``Problem`` a probe recorded goes to ``RuleBase.explain`` with its signal, protocol and
provider — the one diagnosis path, which ``explain`` and ``settings`` take too — and the best rule
gives the finding's category, title and steps. Python supplies only facts (``params``); every
word of advice comes from rules/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from maildiag.errors import ExitCode
from maildiag.models import (
    Category,
    CheckResult,
    Finding,
    Observation,
    Problem,
    Severity,
    Status,
    Target,
    severity_rank,
    severity_status,
    status_rank,
)
from maildiag.probes import order, undeclared
from maildiag.signals import UNEXPLAINED

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase


def finding_for(
    problem: Problem,
    obs: Observation,
    rules: RuleBase,
    *,
    lang: str,
    provider: str | None,
) -> Finding:
    """The finding a probe's problem means: the rule base's answer for its text and signal (the
    same answer ``explain`` gives the same text), else the catch-all for the unexplained."""
    protocol = str(obs.target.service) if obs.target else None
    matches = rules.explain(
        problem.text, signal=problem.signal, protocol=protocol, provider=provider
    ) or rules.match(problem.text, signal=UNEXPLAINED, protocol=protocol, provider=provider)
    params = {"text": problem.text, **problem.params}
    finding = rules.finding(matches[0], lang=lang, params=params, check=obs.check)
    severity = finding.severity
    # A rule's severity is its default; a probe that judged the same fact against the user's
    # thresholds (expiry days, expected mode) knows better whether it is a warning or a failure.
    if severity is not Severity.INFO and obs.status in (Status.WARN, Status.FAIL):
        severity = Severity(str(obs.status))
    evidence = problem.text or finding.evidence
    steps = finding.steps
    if problem.params.get("alternative"):
        # other settings of this service were proven to work (maildiag.alternatives): the
        # first thing to do is to use them
        first = rules.words("step.alternative", lang, alternative=problem.params["alternative"])
        steps = (first, *steps)
    return Finding(
        finding.rule,
        finding.category,
        severity,
        finding.title,
        steps,
        obs.check,
        evidence,
        finding.links,
    )


def generic(finding: Finding) -> bool:
    """A finding that names no specific cause: ``other`` (a catch-all rule, an unexplained reply).

    Within one check it never outranks a specific finding: when the server's refusal is not
    understood but another problem of the same check is, the understood one leads.
    """
    return finding.category == Category.OTHER


def diagnose_one(
    obs: Observation, rules: RuleBase, *, lang: str, provider: str | None
) -> CheckResult:
    wrong = undeclared(obs)
    assert not wrong, f"observation says what its check did not declare: {wrong}"
    findings = tuple(
        sorted(
            (finding_for(p, obs, rules, lang=lang, provider=provider) for p in obs.problems),
            key=generic,  # stable: specific findings first, each group in the probe's order
        )
    )
    status = obs.status
    if status is not Status.SKIP:
        for f in findings:
            implied = severity_status(f.severity)
            if status_rank(implied) > status_rank(status):
                status = implied
    return CheckResult(obs, status, findings, rules.summary_text(obs.summary, "en"))


def order_key(servers: Sequence[Target]) -> Callable[[CheckResult], tuple[int, int, int]]:
    """Run-level checks first, then each server in discovery order, checks in registry order."""

    def key(result: CheckResult) -> tuple[int, int, int]:
        obs = result.observation
        if obs.target is None:
            return (0, order(obs.check), 0)
        idx = servers.index(obs.target) if obs.target in servers else len(servers)
        return (1, idx, order(obs.check))

    return key


def diagnose(
    observations: Iterable[Observation],
    rules: RuleBase,
    *,
    lang: str,
    provider: str | None,
    servers: Sequence[Target] = (),
) -> tuple[tuple[CheckResult, ...], tuple[Finding, ...]]:
    results = sorted(
        (diagnose_one(o, rules, lang=lang, provider=provider) for o in observations),
        key=order_key(servers),
    )
    return tuple(results), merge_findings(results)


def merge_findings(results: Iterable[CheckResult]) -> tuple[Finding, ...]:
    """Every finding of every check once, most important first: by severity, a specific finding
    before a generic one (``other``), then in check order.

    The same advice from two checks (a wrong password refused by SMTP and by IMAP) stays two
    findings, each naming its check; the text report groups them for reading.
    """
    seen: set[tuple[str, str, str | None, str]] = set()
    merged: list[Finding] = []
    for result in results:
        for f in result.findings:
            key = (f.rule, f.title, f.check, f.evidence)
            if key not in seen:
                seen.add(key)
                merged.append(f)
    merged.sort(key=lambda f: (-severity_rank(f.severity), generic(f)))
    return tuple(merged)


def overall(results: Iterable[CheckResult]) -> tuple[Status, ExitCode]:
    worst = max((status_rank(r.status) for r in results), default=0)
    status = {0: Status.OK, 1: Status.WARN, 2: Status.FAIL}[worst]
    return status, {Status.OK: ExitCode.OK, Status.WARN: ExitCode.WARN, Status.FAIL: ExitCode.FAIL}[
        status
    ]
