"""``--format nagios``: output for Nagios, Icinga, Naemon, Shinken and other plugin runners.

Follows the Monitoring Plugins development guidelines::

    MAILDIAG CRITICAL - 2 problems: TITLE; TITLE | time=0.42s;; days_to_expiry_smtp=80;21:;7:
    [FAIL] smtp.auth alice@example.test smtp.example.test:587: TITLE (EVIDENCE)
    [WARN] smtp.tls alice@example.test smtp.example.test:587: TITLE (SUMMARY)
    [SKIP] imap.auth alice@example.test imap.example.test:993: SUMMARY

- The first line is the status line: the state word matches the process exit code (0 OK,
  1 WARNING, 2 CRITICAL, 3 UNKNOWN), so ``--fail-on warn`` shows a warning as CRITICAL.
  It lists the titles of the warn/fail findings, most important first.
- Long output: one line per check that is not ok: every fail, then every warn, then every
  skip, across all targets.
- The words (``2 problems``, ``3 checks ok``, titles, summaries) are in the run's language, from
  rules/ui-monitoring.yaml and the findings; the state word, the check ids and the performance
  data stay as the guidelines want them. A target is named by its ``name`` in a targets file
  (its address by default).
- Performance data, all on the status line: ``time`` (the whole run, seconds),
  ``days_to_expiry_<svc>`` per TLS check (unitless: days are not a valid UOM) with warn/crit
  ranges ``N:`` ("alert below N", the guidelines' range syntax) when the check reported its
  thresholds, and ``clock_offset`` (seconds). With several targets (``--config``) or several
  servers of one service the label is prefixed by the target's name and suffixed by the host.
  A label with a space, ``=`` or ``'`` is quoted, ``'`` doubled.

``|`` cannot appear in plugin text (it starts the performance data), so it is replaced by ``/``
in titles and evidence; line breaks and tabs become spaces, and what a terminal or a web page
would obey or hide (ESC, BEL, bidi overrides, zero-width characters) is written as an escape
(``maildiag.terminal.safe``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maildiag.errors import ExitCode
from maildiag.models import (
    CheckResult,
    ClockFacts,
    Report,
    Severity,
    Status,
    TlsFacts,
    severity_rank,
)
from maildiag.report import reports_of, summary_in
from maildiag.terminal import one_line

if TYPE_CHECKING:
    from maildiag.models import MultiReport
    from maildiag.rulebase import RuleBase

PREFIX = "MAILDIAG"
STATE = {
    ExitCode.OK: "OK",
    ExitCode.WARN: "WARNING",
    ExitCode.FAIL: "CRITICAL",
    ExitCode.ERROR: "UNKNOWN",
}
_STATUS_ORDER = {Status.FAIL: 0, Status.WARN: 1, Status.SKIP: 2, Status.OK: 3}
MAX_STATUS_TEXT = 400  # keep the status line readable in the dashboards


def render_nagios(report: Report | MultiReport, *, rules: RuleBase, lang: str = "en") -> str:
    """The plugin output (status line, long output); the exit code to use is report.exit_code.

    ``rules``: the run's rule base, whose ``nagios.*`` words (rules/ui-monitoring.yaml) and
    check summaries say the text in ``lang``.
    """
    reports = reports_of(report)
    multi = len(reports) > 1 or not isinstance(report, Report)
    state = STATE[ExitCode(report.exit_code)]
    words = _Words(rules, lang)
    summary = _summary(reports, multi, words)
    perf = _perfdata(reports, report.duration_ms, multi)
    lines = [f"{PREFIX} {state} - {summary} | {' '.join(perf)}"]
    # problems first across all targets: fail, then warn, then skip (sorted() is stable)
    entries = [entry for single in reports for entry in _long_output(single, words)]
    lines += [text for _, text in sorted(entries, key=lambda e: _STATUS_ORDER[e[0]])]
    return "\n".join(lines) + "\n"


def render_nagios_error(message: str) -> str:
    """The UNKNOWN line for a run that could not happen (exit code 3, no report)."""
    return f"{PREFIX} UNKNOWN - {_text(message)}\n"


class _Words:
    """``nagios.*`` words and check summaries in one language."""

    def __init__(self, rules: RuleBase, lang: str) -> None:
        self.rules, self.lang = rules, lang

    def __call__(self, key: str, **params: Any) -> str:
        return self.rules.words(key, self.lang, **params)

    def summary(self, check: CheckResult) -> str:
        return summary_in(check, self.rules, self.lang)


def _problems(report: Report, words: _Words) -> list[str]:
    titles = [
        f.title
        for f in sorted(report.findings, key=lambda f: -severity_rank(f.severity))
        if f.severity is not Severity.INFO
    ]
    if not titles:  # a check that is not ok without a finding still deserves a name
        titles = [
            f"{c.id}: {words.summary(c)}"
            for c in report.checks
            if c.status in (Status.FAIL, Status.WARN)
        ]
    return [_text(t) for t in dict.fromkeys(titles)]


def _summary(reports: tuple[Report, ...], multi: bool, words: _Words) -> str:
    if not multi:
        report = reports[0]
        titles = _problems(report, words)
        if not titles:
            return _ok_text(report.checks, report.label, words)
        return _clip(f"{words('nagios.problems', problems=len(titles))}: {'; '.join(titles)}")
    bad = [(r, _problems(r, words)) for r in reports]
    bad = [(r, titles) for r, titles in bad if titles]
    if not bad:
        checks = tuple(c for r in reports for c in r.checks)
        return _ok_text(checks, words("nagios.targets", targets=len(reports)), words)
    total = sum(len(titles) for _, titles in bad)
    parts = [f"{_text(r.label)}: {'; '.join(titles)}" for r, titles in bad]
    head = words("nagios.problems_in", problems=total, failing=len(bad), of_targets=len(reports))
    return _clip(f"{head}: {'; '.join(parts)}")


def _ok_text(checks: tuple[CheckResult, ...], what: str, words: _Words) -> str:
    ok = sum(1 for c in checks if c.status is Status.OK)
    skipped = sum(1 for c in checks if c.status is Status.SKIP)
    return _text(words("nagios.ok", what=what, passed=ok, skipped=skipped or None))


def _long_output(report: Report, words: _Words) -> list[tuple[Status, str]]:
    lines: list[tuple[Status, str]] = []
    for check in report.checks:
        if check.status is Status.OK:
            continue
        obs = check.observation
        where = report.label
        if obs.target is not None:
            where += f" {obs.target.hostport}"
        problems = sorted(
            (f for f in check.findings if f.severity is not Severity.INFO),
            key=lambda f: -severity_rank(f.severity),
        )
        summary = words.summary(check)
        if problems:
            detail = problems[0].evidence or summary
            text = "; ".join(dict.fromkeys(f.title for f in problems))
            if detail and _text(detail) not in _text(text):
                text += f" ({detail})"
        else:
            text = summary
        line = f"[{str(check.status).upper()}] {obs.check} {where}: {_text(text)}"
        lines.append((check.status, line))
    return lines


def _perfdata(reports: tuple[Report, ...], duration_ms: int, multi: bool) -> list[str]:
    perf = [f"time={_num(duration_ms / 1000)}s;;"]
    for report in reports:
        prefix = f"{report.label} " if multi else ""
        tls = [c for c in report.checks if c.id.endswith(".tls") and c.observation.target]
        services = [c.observation.target.service for c in tls if c.observation.target]
        for check in tls:
            facts = check.observation.facts
            target = check.observation.target
            if not isinstance(facts, TlsFacts) or facts.days_to_expiry is None or target is None:
                continue
            days = facts.days_to_expiry
            label = f"{prefix}days_to_expiry_{target.service}"
            if services.count(target.service) > 1:
                label += f"_{target.host}:{target.port}"
            warn, crit = _threshold(facts.warn_days), _threshold(facts.crit_days)
            perf.append(f"{perf_label(label)}={days};{warn};{crit}")
        for check in report.checks:
            clock = check.observation.facts
            if isinstance(clock, ClockFacts):
                offset = clock.offset_seconds
                perf.append(f"{perf_label(prefix + 'clock_offset')}={_num(offset)}s;;")
    return perf


def perf_label(label: str) -> str:
    """A performance-data label, quoted when it holds a space, ``=`` or ``'``."""
    label = one_line(label).replace("|", "/")
    if any(c in label for c in " ='"):
        return "'" + label.replace("'", "''") + "'"
    return label


def _threshold(days: object) -> str:
    if isinstance(days, int) and not isinstance(days, bool):
        return f"{days}:"
    return ""


def _num(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _text(text: str) -> str:
    return one_line(text).replace("|", "/")


def _clip(text: str) -> str:
    if len(text) <= MAX_STATUS_TEXT:
        return text
    return text[: MAX_STATUS_TEXT - 3].rstrip() + "..."
