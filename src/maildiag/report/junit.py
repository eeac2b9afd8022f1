"""``--format junit``: the report as JUnit XML, the test-result format CI systems import.

Layout (the Ant/Surefire schema Jenkins' JUnit plugin, GitLab's ``artifacts:reports:junit`` and
the GitHub test-report actions read)::

    <testsuites name="maildiag" tests failures errors skipped time>
      <testsuite name="alice@example.test" ...>                         run-level checks: dns, clock
      <testsuite name="alice@example.test smtp://smtp.example.test:465/ssl" ...>   one per server
        <properties><property name="address" value="..."/>...</properties>
        <testcase classname="maildiag.smtp" name="smtp.tls alice@example.test smtp.example.test:465"
                  time="0.041">
          <failure type="cert_expired" message="finding titles">titles, steps, evidence</failure>
          <system-out>the check's summary, info findings, transcript</system-out>
        </testcase>

Status mapping:

- ``fail`` -> ``<failure type="CATEGORY">`` (the category of the most important finding);
- ``warn`` -> ``<failure type="warning">``. JUnit has no warning state, and ``<system-out>`` is
  shown by none of the three CI systems unless someone opens the test, so a warning (a
  certificate inside ``--warn-days``) is a failed test case: Jenkins marks the build UNSTABLE
  (yellow), GitLab and the GitHub reporters list it with the failures. Whether the job itself
  fails is decided by the exit code (see ``maildiag.report`` and ``--fail-on``);
- ``skip`` -> ``<skipped message="summary"/>``;
- ``ok`` -> a passing test case.

``errors`` is always 0: a check that could not run is ``skip`` and an internal error is reported
by the check itself. ``classname`` is ``maildiag.<service>`` (``maildiag.run`` for dns/clock)
because Jenkins splits class names at dots; the address and server go into ``name``, which keeps
every test case unique across servers and targets.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from maildiag.models import (
    CheckResult,
    Finding,
    Report,
    Severity,
    Status,
    Target,
    severity_rank,
)
from maildiag.report import reports_of, summary_in
from maildiag.terminal import safe

if TYPE_CHECKING:
    from maildiag.models import MultiReport
    from maildiag.rulebase import RuleBase

# Characters XML 1.0 cannot carry, even escaped; a hostile server may send any byte.
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render_junit(report: Report | MultiReport, *, rules: RuleBase, lang: str = "en") -> str:
    """``rules``: the run's rule base, whose words (``junit.*`` in rules/ui-monitoring.yaml, the
    check summaries) say the messages and failure texts in ``lang``."""
    root = ET.Element("testsuites", {"name": "maildiag"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    words = _Words(rules, lang)
    for single in reports_of(report):
        for suite, counts in _suites(single, words):
            root.append(suite)
            for key in totals:
                totals[key] += counts[key]
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(report.duration_ms))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


class _Words:
    def __init__(self, rules: RuleBase, lang: str) -> None:
        self.rules, self.lang = rules, lang

    def __call__(self, key: str) -> str:
        return self.rules.words(key, self.lang)

    def summary(self, check: CheckResult) -> str:
        return summary_in(check, self.rules, self.lang)


def _suites(report: Report, words: _Words) -> list[tuple[ET.Element, dict[str, int]]]:
    run_level, by_target = report.by_server()
    out = []
    if run_level or not report.checks:
        out.append(_suite(report, report.label, None, run_level, words))
    for target, checks in by_target.items():
        if checks:
            out.append(_suite(report, f"{report.label} {target.label}", target, checks, words))
    return out


def _suite(
    report: Report, name: str, target: Target | None, checks: list[CheckResult], words: _Words
) -> tuple[ET.Element, dict[str, int]]:
    suite = ET.Element("testsuite", {"name": _clean(name)})
    props = ET.SubElement(suite, "properties")
    values = [
        ("name", report.label),
        ("address", report.address),
        ("status", str(report.status)),
        ("discovery.source", str(report.discovery.source or "")),
        ("discovery.provider", report.discovery.provider or ""),
    ]
    if target is not None:
        values += [
            ("service", str(target.service)),
            ("host", target.host),
            ("port", str(target.port)),
            ("security", str(target.security)),
        ]
    for key, value in values:
        ET.SubElement(props, "property", {"name": key, "value": _clean(value)})

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_ms = 0
    for check in checks:
        suite.append(_testcase(report, check, words))
        counts["tests"] += 1
        total_ms += check.observation.duration_ms
        if check.status in (Status.FAIL, Status.WARN):
            counts["failures"] += 1
        elif check.status is Status.SKIP:
            counts["skipped"] += 1
    for key, count in counts.items():
        suite.set(key, str(count))
    suite.set("time", _seconds(total_ms))
    return suite, counts


def _testcase(report: Report, check: CheckResult, words: _Words) -> ET.Element:
    obs = check.observation
    target = obs.target
    summary = words.summary(check)
    if target is None:
        classname, name = "maildiag.run", f"{obs.check} {report.label}"
    else:
        classname = f"maildiag.{target.service}"
        name = f"{obs.check} {report.label} {target.hostport}"
    case = ET.Element(
        "testcase",
        {"classname": classname, "name": _clean(name), "time": _seconds(obs.duration_ms)},
    )
    problems = sorted(
        (f for f in check.findings if f.severity is not Severity.INFO),
        key=lambda f: -severity_rank(f.severity),
    )
    if check.status in (Status.FAIL, Status.WARN):
        wanted = Severity.FAIL if check.status is Status.FAIL else Severity.WARN
        headline = [f for f in problems if f.severity is wanted] or problems
        message = "; ".join(dict.fromkeys(f.title for f in headline)) or summary
        if check.status is Status.WARN:
            kind = "warning"
        else:
            kind = str(headline[0].category) if headline else "fail"
        failure = ET.SubElement(case, "failure", {"type": kind, "message": _clean(message)})
        failure.text = _clean(_failure_text(report, check, problems, words))
    elif check.status is Status.SKIP:
        ET.SubElement(case, "skipped", {"message": _clean(summary)})

    out = [f"{obs.check}: {summary}"] if summary else []
    for finding in check.findings:
        if finding.severity is Severity.INFO:
            out += ["", *_finding_lines(finding, words)]
    if report.transcript and obs.transcript:
        out += ["", f"{words('junit.transcript')}:", *obs.transcript]
    if out:
        ET.SubElement(case, "system-out").text = _clean("\n".join(out))
    return case


def _failure_text(
    report: Report, check: CheckResult, problems: list[Finding], words: _Words
) -> str:
    lines: list[str] = []
    for finding in problems:
        lines += [*_finding_lines(finding, words), ""]
    where = check.observation.target.label if check.observation.target else report.label
    lines.append(f"{check.observation.check} ({where}): {words.summary(check)}")
    return "\n".join(lines)


def _finding_lines(finding: Finding, words: _Words) -> list[str]:
    lines = [f"[{finding.severity}] {finding.title}"]
    lines += [f"  {n}. {step}" for n, step in enumerate(finding.steps, start=1)]
    if finding.evidence:
        lines.append(f"  {words('junit.evidence')}: {finding.evidence}")
    lines.append(f"  {words('junit.rule')}: {finding.rule} ({finding.category})")
    lines += [f"  {words('junit.links')}: {link}" for link in finding.links]
    return lines


def _seconds(ms: int) -> str:
    return f"{max(ms, 0) / 1000:.3f}"


def _clean(text: str) -> str:
    """Text XML can carry, with what a terminal or a browser would obey or hide (ESC, bidi
    overrides, zero-width characters) written as an escape: CI systems show it on both."""
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", safe(text))
