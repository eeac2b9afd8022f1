"""The human report, made with rich: servers, each check's status, then the findings and steps.

``render_text`` is a function of the report and its inputs: the language, the console to write
to, and ``UiText``, the words of the report from the ``ui:`` tables of the rule base
(rules/ui-report.yaml: ``report.*`` headings, ``summary.*`` check summaries). A check's summary is
shown in the user's language when its observation carries a ``summary_key`` the table knows, else
as the probe's English ``summary``. ``Progress`` shows a live line on stderr while checks run —
chatter goes to stderr, the report to stdout. The advice itself comes from the findings (rules/).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maildiag.models import CheckResult, Observation, Report, Severity, Status

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase


_TOKEN = re.compile("\x00([0-9]+)\x00")


class UiText:
    """The report's words in a language: ``text(key, lang, **params)`` over the rule base's ui.

    Params are quoted verbatim (rendered by ``RuleBase.ui_text``), and before that:

    * a param ``{"key": k, "params": {...}}`` is the nested summary ``summary.<k>``, rendered
      first; a list of them is rendered and joined with "; " (the facts of the dns check);
    * a param with a language twin (``offset_human`` / ``offset_human_ru``) reads in the language;
    * a whole number ``X`` with a ``plural.X`` entry ("day|days", "день|дня|дней") gets ``X_unit``,
      the unit word in the plural form the number takes.
    """

    def __init__(self, rules: RuleBase) -> None:
        self._rules = rules

    @classmethod
    def builtin(cls) -> UiText:
        from maildiag.rulebase import RuleBase

        return cls(RuleBase.load())

    def has(self, key: str) -> bool:
        return key in self._rules.ui

    def text(self, key: str, lang: str, **params: Any) -> str:
        values = self._params(params, lang)
        # each value goes in as a token and comes back verbatim after the template is rendered:
        # a server's words are not subject to the template's spacing and punctuation clean-up
        verbatim: list[str] = []
        safe: dict[str, str] = {}
        for name, value in values.items():
            if value is None or value == "":
                safe[name] = ""
                continue
            safe[name] = f"\x00{len(verbatim)}\x00"
            verbatim.append(str(value))
        out = self._rules.ui_text(key, lang, **safe) if safe else self._rules.ui_text(key, lang)
        return _TOKEN.sub(lambda m: verbatim[int(m.group(1))], out) if verbatim else out

    def summary(self, obs: Observation, lang: str) -> str:
        """The observation's summary in ``lang``, or its English ``summary`` without a template."""
        key = "summary." + obs.summary_key if obs.summary_key else ""
        if not key or not self.has(key):
            return obs.summary
        return self.text(key, lang, **obs.summary_params)

    def _nested(self, value: Any, lang: str) -> str | None:
        if isinstance(value, Mapping) and isinstance(value.get("key"), str):
            key = "summary." + value["key"]
            params = value.get("params") or {}
            if self.has(key):
                return self.text(key, lang, **params)
            return str(params.get("error", ""))
        return None

    def _params(self, params: Mapping[str, Any], lang: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in params.items():
            nested = self._nested(value, lang)
            if nested is not None:
                value = nested
            elif (
                isinstance(value, (list, tuple))
                and value
                and all(isinstance(v, Mapping) for v in value)
            ):
                value = "; ".join(t for t in (self._nested(v, lang) for v in value) if t)
            out[name] = value
        suffix = "_" + lang
        for name, value in list(out.items()):
            if name.endswith(suffix) and value not in (None, ""):
                out[name[: -len(suffix)]] = value
        for name, value in list(out.items()):
            if isinstance(value, int) and not isinstance(value, bool):
                forms = self._rules.ui.get("plural." + name)
                if forms:
                    out[name + "_unit"] = plural_form(value, forms.get(lang) or forms["en"])
        return out


def plural_form(n: int, forms: str) -> str:
    """The form of a unit word for ``n``: "one|many" (English) or "one|few|many" (Russian)."""
    words = [w.strip() for w in forms.split("|")]
    n = abs(n)
    if len(words) >= 3:
        if n % 10 == 1 and n % 100 != 11:
            return words[0]
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return words[1]
        return words[2]
    return words[0] if n == 1 or len(words) == 1 else words[1]


class _Labels:
    """``labels["took"]``: the ``report.<name>`` text of one language."""

    def __init__(self, ui: UiText, lang: str) -> None:
        self._ui, self._lang = ui, lang

    def __getitem__(self, name: str) -> str:
        return self._ui.text("report." + name, self._lang)


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

    stream = file or sys.stdout
    # A terminal wraps to its width; a pipe or a log file gets whole lines.
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty())


def render_text(
    report: Any, *, lang: str = "en", console: Any = None, ui: UiText | None = None
) -> None:
    """Print one report, or each report of a multi-target run in turn.

    ``ui``: the report's words (``UiText`` over the rule base the run used); the built-in rule
    base when not given.
    """
    console = console or _console()
    ui = ui or UiText.builtin()
    reports = getattr(report, "reports", None)
    if reports is not None:
        for one in reports:
            _render_one(one, lang, console, ui)
            console.print()
        return
    _render_one(report, lang, console, ui)


def _render_one(report: Report, lang: str, console: Any, ui: UiText) -> None:
    from rich.table import Table

    escape = _escape

    labels = _Labels(ui, lang)
    mark, style = _STATUS_STYLE[report.status]
    took = ui.text("report.seconds", lang, seconds=f"{report.duration_ms / 1000:.1f}")
    console.print(
        f"[bold]maildiag check {escape(report.address)}[/]  "
        f"[{style}]{mark} {report.status.upper()}[/]  "
        f"[dim]({labels['took']} {took}, "
        f"{labels['exit']} {int(report.exit_code)})[/]"
    )
    source = report.discovery.source
    source_key = f"report.source.{source}"
    source_text = ui.text(source_key, lang) if source and ui.has(source_key) else f"{source}"
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
    for result in report.checks:
        _check_row(table, result, escape, ui.summary(result.observation, lang))
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
        return
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


# C0 and C1 control characters except tab and newline (ESC, BEL, CSI ...): a server's words are
# shown, never obeyed by the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(text: str) -> str:
    """Text for the console: control characters as ``\\xNN``, then rich markup escaped."""
    from rich.markup import escape

    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


def _grouped(findings: Any) -> list[list[Any]]:
    """Findings with the same rule and title shown once, naming every check that raised them."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for f in findings:
        groups.setdefault((f.rule, f.title), []).append(f)
    return list(groups.values())


def _where(result: CheckResult) -> str:
    t = result.observation.target
    return f"{result.id} {t.host}:{t.port}" if t else result.id


def _check_row(table: Any, result: CheckResult, escape: Any, summary: str) -> None:
    # one server per service, so the check id names the server listed above
    mark, style = _STATUS_STYLE[result.status]
    table.add_row(f"[{style}]{mark}[/]", result.id, escape(" ".join(summary.split())[:160]))


class Progress:
    """A live line on stderr: how many checks are done and the latest one."""

    def __init__(self, lang: str = "en", ui: UiText | None = None) -> None:
        from rich.console import Console
        from rich.status import Status as Spinner

        self._labels = _Labels(ui or UiText.builtin(), lang)
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
