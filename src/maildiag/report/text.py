"""The human report, made with rich: servers, each check's status, then the findings and steps.

``render_text`` is a function of the report and its inputs: the language, the console to write
to, and the rule base of the run, whose ``ui:`` tables (rules/ui-report.yaml: ``report.*``
headings, ``summary.*`` check summaries) give every word of the report in the user's language.
``Progress`` shows a live line on stderr while checks run — chatter goes to stderr, the report to
stdout. The advice itself comes from the findings (rules/).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from maildiag.models import SECURITY_LABELS, CheckResult, Observation, Report, Severity, Status
from maildiag.terminal import safe

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase


class _Labels:
    """``labels["took"]``: the ``report.<name>`` text of one language."""

    def __init__(self, rules: RuleBase, lang: str) -> None:
        self._rules, self._lang = rules, lang

    def __getitem__(self, name: str) -> str:
        return self._rules.words("report." + name, self._lang)


_STATUS_STYLE = {
    Status.OK: ("✔", "green"),
    Status.WARN: ("!", "yellow"),
    Status.FAIL: ("✖", "red"),
    Status.SKIP: ("–", "dim"),
}
_SEVERITY_STYLE = {
    Severity.FAIL: "bold red",
    Severity.WARN: "bold yellow",
    Severity.INFO: "bold cyan",
}


def _console(file: Any = None) -> Any:
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with 1 here; the caller keeps the run's own exit code instead
            self.quiet = True
            raise BrokenPipeError

    stream = file or sys.stdout
    # A terminal wraps to its width; a pipe or a log file gets whole lines.
    return PipeConsole(file=stream, highlight=False, soft_wrap=not stream.isatty())


def render_text(report: Any, *, lang: str = "en", console: Any = None, rules: RuleBase) -> None:
    """Print one report, or each report of a multi-target run in turn.

    ``rules``: the rule base the run used, whose ``ui`` tables word the report.
    """
    console = console or _console()
    reports = getattr(report, "reports", None)
    if reports is not None:
        for one in reports:
            _render_one(one, lang, console, rules)
            console.print()
        return
    _render_one(report, lang, console, rules)


def _render_one(report: Report, lang: str, console: Any, ui: RuleBase) -> None:
    from rich.table import Table

    escape = _escape

    labels = _Labels(ui, lang)
    mark, style = _STATUS_STYLE[report.status]
    took = ui.words("report.seconds", lang, seconds=f"{report.duration_ms / 1000:.1f}")
    console.print(
        f"[bold]maildiag check {escape(report.address)}[/]  "
        f"[{style}]{mark} {report.status.upper()}[/]  "
        f"[dim]({labels['took']} {took}, "
        f"{labels['exit']} {int(report.exit_code)})[/]"
    )
    source = report.discovery.source
    source_key = f"report.source.{source}"
    source_text = ui.words(source_key, lang) if source and source_key in ui.ui else f"{source}"
    where = source_text + (f" ({report.discovery.provider})" if report.discovery.provider else "")
    console.print(
        f"\n[bold]{labels['servers']}[/] [dim]{labels['source']}: "
        f"{escape(where) if source else '—'}[/]"
    )
    if not report.servers:
        console.print(f"  [dim]{labels['none']}[/]")
    for t in report.servers:
        console.print(f"  {t.service:<5} {escape(t.host)}:{t.port}  {t.security}")

    console.print(f"\n[bold]{labels['checks']}[/]")
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
    services = [t.service for t in report.servers]
    for result in report.checks:
        target = result.observation.target
        # several servers of one service (a server checked on all its ports): name the port
        port = None
        if target is not None and services.count(target.service) > 1:
            port = target.port
        _check_row(table, result, escape, ui.summary_text(result.observation.summary, lang), port)
    console.print(table)
    if report.transcript:
        for result in report.checks:
            if result.observation.transcript:
                console.print(f"\n[dim]── {escape(_where(result))} ──[/]")
                for line in result.observation.transcript:
                    console.print(f"  [dim]{escape(line)}[/]")

    console.print()
    if not report.findings:
        console.print(f"[green]{labels['ok']}[/]")
    else:
        _findings(report, console, labels)
    _settings(report, console, ui, lang)


def _findings(report: Report, console: Any, labels: _Labels) -> None:
    escape = _escape
    console.print(f"[bold]{labels['findings']}[/]")
    for i, group in enumerate(_grouped(report.findings), 1):
        f = group[0]
        checks = ", ".join(dict.fromkeys(g.check or "" for g in group))
        sev = _SEVERITY_STYLE[f.severity]
        console.print(
            f"\n{i}. [{sev}]{f.severity.upper()}[/] [bold]{escape(f.title)}[/] "
            f"[dim]({f.category}; {escape(checks)}; {f.rule})[/]"
        )
        for n, step in enumerate(f.steps, 1):
            console.print(f"   {n}) {escape(step)}")
        for evidence in dict.fromkeys(" ".join(g.evidence.split()) for g in group):
            if evidence:
                console.print(f"   [dim]{labels['evidence']}: {escape(evidence[:300])}[/]")
        for link in f.links:
            console.print(f"   [dim]{escape(link)}[/]")


def _settings(report: Report, console: Any, ui: RuleBase, lang: str) -> None:
    """ "Settings that work", ready to copy into a mail program, then the alternatives tried."""
    services = list(dict.fromkeys(t.service for t in report.servers))
    if not services:
        return
    labels = _Labels(ui, lang)
    escape = _escape
    console.print(f"\n[bold]{labels['settings']}[/]")
    by_service = {r.service: r for r in report.recommended}
    for service in services:
        entry = by_service.get(service)
        if entry is None:
            console.print(f"  {service:<5} [red]{labels['settings.nothing']}[/]")
            continue
        parts = [
            f"{labels['settings.server']} [bold]{escape(entry.host)}[/]",
            f"{labels['settings.port']} [bold]{entry.port}[/]",
            f"{labels['settings.security']} [bold]{SECURITY_LABELS[entry.security]}[/]",
        ]
        if entry.login is not None:
            parts.append(f"{labels['settings.login']} [bold]{escape(entry.login)}[/]")
        console.print(f"  [green]{service:<5}[/] " + "  ".join(parts))
    for tried in report.alternatives:
        t = tried.target
        where = f"{t.service} {escape(t.host)}:{t.port} {SECURITY_LABELS.get(t.security, '')}"
        if tried.works:
            outcome = labels["settings.works"]
        else:
            failed = next((c for c in tried.checks if c.status is Status.FAIL), None)
            shown = failed or next((c for c in tried.checks if c.status is Status.SKIP), None)
            outcome = ""
            if shown is not None:
                text = ui.summary_text(shown.observation.summary, lang)
                outcome = f"{shown.id}: {escape(' '.join(text.split())[:160])}"
        console.print(f"  [dim]{labels['settings.tried']}: {where} — {outcome}[/]")


def _escape(text: str) -> str:
    """Text for the console: what a terminal would obey or hide escaped (ESC, BEL, bidi
    overrides, zero-width characters: ``maildiag.terminal.safe``), then rich markup escaped."""
    from rich.markup import escape

    return escape(safe(text))


def _grouped(findings: Any) -> list[list[Any]]:
    """Findings with the same rule and title shown once, naming every check that raised them."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for f in findings:
        groups.setdefault((f.rule, f.title), []).append(f)
    return list(groups.values())


def _where(result: CheckResult) -> str:
    t = result.observation.target
    return f"{result.id} {t.host}:{t.port}" if t else result.id


def _check_row(
    table: Any, result: CheckResult, escape: Any, summary: str, port: int | None = None
) -> None:
    # with one server per service the check id names the server listed above
    mark, style = _STATUS_STYLE[result.status]
    name = result.id if port is None else f"{result.id} {port}"
    table.add_row(f"[{style}]{mark}[/]", name, escape(" ".join(summary.split())[:160]))


class Progress:
    """A live line on stderr: how many checks are done and the latest one."""

    def __init__(self, lang: str, rules: RuleBase) -> None:
        from rich.console import Console
        from rich.status import Status as Spinner

        self._labels = _Labels(rules, lang)
        self._done = 0
        self._spinner = Spinner(
            f"{self._labels['checking']}…", console=Console(file=sys.stderr, highlight=False)
        )
        self._spinner.start()

    def update(self, obs: Observation) -> None:
        self._done += 1
        mark, style = _STATUS_STYLE[obs.status]
        self._spinner.update(
            f"{self._labels['checking']}… {self._done} {self._labels['done']}, "
            f"[{style}]{mark}[/] {obs.check}"
        )

    def close(self) -> None:
        self._spinner.stop()
