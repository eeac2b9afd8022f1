"""Renderers of a finished report, and the one rule that turns a status into an exit code.

Every renderer is a pure function of a ``Report`` (one address) or a ``MultiReport``
(``--config``, several targets): ``text``, ``json``, ``junit``, ``nagios``, ``prometheus``.
They never run checks and never decide the exit code; they show ``report.exit_code``.

Exit codes and ``--fail-on``
----------------------------

The report's ``status`` is always the honest worst status of its checks (``ok``, ``warn`` or
``fail``; a ``skip`` counts as ``ok``). ``--fail-on`` changes only the exit code, never the
status written in JSON, text, JUnit or Prometheus output:

    status    --fail-on fail (default)    --fail-on warn
    ok        0                           0
    warn      1                           2
    fail      2                           2

So with the default a pipeline that treats any non-zero exit as failure breaks on warnings too,
while one that accepts 1 (``|| [ $? -eq 1 ]``, GitLab's ``allow_failure: exit_codes: [1]``,
systemd's ``SuccessExitStatus=1``) breaks only on failures; ``--fail-on warn`` makes warnings
(a certificate inside ``--warn-days``, for instance) break such a pipeline as well. The JSON
``exit_code`` field is the process's exit code, so it reflects ``--fail-on``; ``status`` does not.
For ``--format nagios`` the status word follows the exit code (``--fail-on warn`` turns a warning
into ``CRITICAL``), because Nagios reads the two together. Exit code 3 means the diagnosis could
not run at all (usage error, unreadable config or rule base) and comes with no report.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, TypeVar

from maildiag.errors import ExitCode
from maildiag.models import Report, Status

if TYPE_CHECKING:
    from maildiag.models import CheckResult, MultiReport
    from maildiag.rulebase import RuleBase

FAIL_ON = ("warn", "fail")

R = TypeVar("R", "Report", "MultiReport")


def exit_code_for(status: Status, fail_on: str = "fail") -> ExitCode:
    """The process exit code for a run whose worst status is ``status``.

    ``fail_on="fail"``: ok/skip -> 0, warn -> 1, fail -> 2 (Nagios semantics).
    ``fail_on="warn"``: warnings are promoted to 2; ok/skip -> 0, fail -> 2.
    """
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    status = Status(status)
    if status is Status.FAIL:
        return ExitCode.FAIL
    if status is Status.WARN:
        return ExitCode.FAIL if fail_on == "warn" else ExitCode.WARN
    return ExitCode.OK


def apply_fail_on(report: R, fail_on: str) -> R:
    """The same report with ``exit_code`` recomputed for ``--fail-on``; statuses untouched.

    For a ``MultiReport`` every report is recomputed and the combined exit code is the worst.
    """
    from maildiag.models import MultiReport

    if isinstance(report, MultiReport):
        reports = [apply_fail_on(r, fail_on) for r in report.reports]
        return MultiReport.of(reports, report.duration_ms)
    return dataclasses.replace(report, exit_code=exit_code_for(report.status, fail_on))


def reports_of(report: Report | MultiReport) -> tuple[Report, ...]:
    """The single reports a renderer walks: one for ``check ADDRESS``, several for ``--config``."""
    if isinstance(report, Report):
        return (report,)
    return tuple(report.reports)


def summary_in(check: CheckResult, rules: RuleBase, lang: str) -> str:
    """A check's summary in ``lang``: the English one diagnosis already rendered (what JSON
    shows), else its template in the rule base (``summary.<key>`` in rules/ui-report.yaml)."""
    if lang == "en" and check.summary:
        return check.summary
    return rules.summary_text(check.observation.summary, lang)
