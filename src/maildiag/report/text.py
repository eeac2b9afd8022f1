"""The human report: plain text, most important first, wrapped to the terminal, in one language.

Layout of one report (``--config`` prints one per target, then a summary line per target)::

    ✖ alice@example.test: 2 problems (took 0.3 s, exit code 2)      the verdict first
                                                                     (blank line)
    Checks (servers found via the command line)
      ✔ DNS       explicit servers: 3 of 3 server names resolve
    SMTP  127.0.0.1:2525  STARTTLS                                   one group per server
      ✔ connect   connected to 127.0.0.1:2525
      ✖ sender    refused at RCPT: 553 5.7.1 Sender address rejected: not owned by auth
                  user.                                              hanging indents
      – 2 checks not run: ...                                        a failure's consequences

    What is wrong and what to do                                     fail, then warn
    1. ✖ The sender address differs from the address you log in with
       Where: SMTP 127.0.0.1:2525 (sender)                           merged: every place
       1) ...
       Seen: 553 5.7.1 Sender address rejected: not owned by auth user.

    Notes                                                            info findings: titles
      • The server accepts mail only after SMTP authentication ... (SMTP ...)

    Settings that work                                               when the report has them
    Everything checked is fine.                                      a healthy run's last line

Every word comes from the run's rule base (``report.*``, ``summary.*`` in rules/ui-report.yaml;
titles and steps from the findings); ``--verbose`` adds the internal names (check ids,
categories, rule ids), every step of a note, and every piece of evidence. Lines are wrapped to
the terminal's width (or ``COLUMNS``); a pipe or a file gets whole lines and no trailing blanks.
Whatever a server sent goes through ``maildiag.terminal.safe``; colours only on a terminal
(not with ``NO_COLOR``). A console whose encoding lacks the marks (✔ ✖) gets words instead.

No third-party import: this is on the path of every ``check`` (plain ``textwrap`` is faster to
import than a rich-text library and gives the exact lines wanted).
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from maildiag.models import (
    Alternative,
    CheckResult,
    Finding,
    MultiReport,
    Report,
    Severity,
    Status,
    Target,
    hostport,
    severity_rank,
)
from maildiag.report import summary_in
from maildiag.terminal import carries, safe

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase

_MARKS = {"ok": "✔", "warn": "!", "fail": "✖", "skip": "–", "info": "•"}
_COLORS = {"ok": "32", "warn": "33", "fail": "31", "skip": "2", "info": "36"}
MAX_EVIDENCE = 3  # distinct pieces of evidence shown per finding (all with --verbose)
MAX_EVIDENCE_CHARS = 300


def render_text(
    report: Report | MultiReport,
    *,
    lang: str = "en",
    rules: RuleBase,
    out: Any = None,
    verbose: bool = False,
    width: int | None = -1,
    color: bool | None = None,
) -> None:
    """Print one report, or each report of a ``--config`` run and a summary line per target.

    ``out``: the stream (stdout); ``width``: columns to wrap at (-1: the terminal's, or
    ``COLUMNS``; None: no wrapping); ``color``: ANSI colours (None: on a terminal only).
    """
    stream = out if out is not None else sys.stdout
    writer = Writer(
        stream,
        terminal_width(stream) if width == -1 else width,
        use_color(stream) if color is None else color,
    )
    view = _View(rules, lang, verbose, writer)
    if isinstance(report, MultiReport):
        for one in report.reports:
            view.report(one, named=True)
            writer.blank()
        view.combined(report)
    else:
        view.report(report, named=False)
    writer.flush()


# -- output -----------------------------------------------------------------------------------


def terminal_width(stream: Any) -> int | None:
    """Columns to wrap at: ``COLUMNS`` when set, else the terminal's; None for a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) >= 20:
        return int(columns)
    try:
        if stream.isatty():
            size = os.get_terminal_size(stream.fileno()).columns
            return size if size >= 20 else 80  # a terminal that does not say: 80
    except (AttributeError, OSError, ValueError):
        pass
    return None


def use_color(stream: Any) -> bool:
    """ANSI colours: on a terminal, unless NO_COLOR is set or TERM is dumb (no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    return sys.platform != "win32" or _windows_ansi()


def _windows_ansi() -> bool:
    """Turn on the console's escape-sequence processing (Windows 10 and later); False when
    the console cannot (then no colours)."""
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
        handle = kernel32.GetStdHandle(-11)  # STD_OUTPUT_HANDLE
        mode = ctypes.c_uint32()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return False
        # ENABLE_VIRTUAL_TERMINAL_PROCESSING
        return bool(kernel32.SetConsoleMode(handle, mode.value | 0x0004))
    except (AttributeError, OSError, ImportError):
        return False


class Writer:
    """Lines wrapped to ``width`` with hanging indents; text made safe for a terminal; marks
    and headings coloured when ``color``; never a trailing blank."""

    def __init__(self, stream: Any, width: int | None, color: bool) -> None:
        self.stream = stream
        self.width = width
        self.color = color
        self.lines: list[str] = []

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def heading(self, text: str) -> None:
        self.para(text, style="1")

    def para(
        self,
        text: str,
        first: str = "",
        rest: str | None = None,
        *,
        mark: tuple[str, str] | None = None,
        style: str | None = None,
        breakable: bool = True,
    ) -> None:
        """``text`` after ``first`` (the indent and mark of its first line), its further lines
        indented by ``rest`` (default: as wide as ``first``). ``mark``: (the mark as it
        stands in ``first``, its colour)."""
        text = " ".join(safe(text).split())
        if rest is None:
            rest = " " * len(first)
        lines = self._wrap(text, first, rest, breakable)
        for i, line in enumerate(lines):
            line = line.rstrip()
            if self.color:
                if i == 0 and mark is not None and mark[0]:
                    line = line.replace(mark[0], _paint(mark[0], mark[1]), 1)
                if style is not None:
                    line = _paint(line, style)
            self.lines.append(line)

    def _wrap(self, text: str, first: str, rest: str, breakable: bool) -> list[str]:
        if self.width is None or len(first) + len(text) <= self.width:
            return [first + text]
        if self.width - len(rest) < 24:  # a deep indent on a narrow terminal: indent less
            rest = rest[: max(2, self.width // 4)]
        wrapper = textwrap.TextWrapper(
            width=self.width,
            initial_indent=first,
            subsequent_indent=rest,
            break_on_hyphens=False,
            break_long_words=breakable,
        )
        return wrapper.wrap(text) or [first.rstrip()]

    def flush(self) -> None:
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        if self.lines:
            self.stream.write("\n".join(self.lines) + "\n")
        self.lines = []


def _paint(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


# -- the report ---------------------------------------------------------------------------------


class _View:
    """The words of one language, and the marks this console can show."""

    def __init__(self, rules: RuleBase, lang: str, verbose: bool, out: Writer) -> None:
        self.rules, self.lang, self.verbose, self.out = rules, lang, verbose, out
        self.by_id: dict[str, CheckResult] = {}  # the checks of the report being shown
        symbols = "".join(_MARKS.values())
        if carries(symbols, out.stream):
            self.marks = dict(_MARKS)
        else:  # cp866, ASCII ...: words, padded to one width
            words = {k: self.words(f"report.mark.{k}") for k in _MARKS}
            wide = max(len(w) for w in words.values())
            self.marks = {k: w.ljust(wide) for k, w in words.items()}

    def words(self, key: str, **params: Any) -> str:
        return self.rules.words(key, self.lang, **params)

    def mark(self, status: str) -> tuple[str, tuple[str, str]]:
        text = self.marks[status]
        return text, (text.strip(), _COLORS[status])

    # -- one report ------------------------------------------------------------------------
    def report(self, report: Report, *, named: bool) -> None:
        out = self.out
        self.by_id = {c.id: c for c in report.checks}
        problems = _groups(f for f in report.findings if f.severity is not Severity.INFO)
        notes = _groups(f for f in report.findings if f.severity is Severity.INFO)
        self.headline(report, problems, named)
        out.blank()
        self.checks(report)
        if report.transcript:
            self.transcripts(report)
        if problems:
            out.blank()
            out.heading(self.words("report.findings"))
            for number, group in enumerate(problems, 1):
                out.blank()
                self.finding(number, group)
        if notes:
            out.blank()
            out.heading(self.words("report.notes"))
            for number, group in enumerate(notes, 1):
                if self.verbose:
                    out.blank()
                    self.finding(number, group)
                else:
                    self.note(group)
        if report.servers:
            out.blank()
            self.settings(report)
        if report.status is Status.OK and not named:
            out.blank()
            out.para(self.words("report.ok"), style=_COLORS["ok"])

    def verdict(self, report: Report, problems: Sequence[Sequence[Finding]]) -> str:
        fails = sum(1 for g in problems if g[0].severity is Severity.FAIL)
        warns = sum(1 for g in problems if g[0].severity is Severity.WARN)
        if report.status is Status.FAIL:
            # a failed check always counts, even one no rule explained
            return self.words("report.verdict.fail", problems=max(fails, 1), warnings=warns or None)
        if report.status is Status.WARN:
            return self.words("report.verdict.warn", warnings=max(warns, 1))
        return self.words("report.verdict.ok")

    def headline(self, report: Report, problems: Sequence[Sequence[Finding]], named: bool) -> None:
        who = report.address
        if named and report.name and report.name != report.address:
            who = f"{report.name} ({report.address})"
        text = self.words(
            "report.headline",
            address=who,
            verdict=self.verdict(report, problems),
            seconds=f"{report.duration_ms / 1000:.1f}",
            code=int(report.exit_code),
        )
        mark, paint = self.mark(str(report.status))
        self.out.para(text, f"{mark} ", "  ", mark=paint, style="1")

    # -- checks ----------------------------------------------------------------------------
    def checks(self, report: Report) -> None:
        out = self.out
        source = report.discovery.source
        checks = self.words("report.checks")
        if report.servers and source is not None:
            heading = self.words(
                "report.found",
                heading=checks,
                source=self.words(f"report.source.{source}"),
                provider=report.discovery.provider,
            )
        else:
            heading = self.words("report.none", heading=checks)
        out.heading(heading)
        run_level, by_server = report.by_server()
        groups = [(t, self.collapsed(results)) for t, results in by_server.items() if results]
        shown = run_level + [c for _, items in groups for c in items if isinstance(c, CheckResult)]
        column = max((len(self.name(c)) for c in shown), default=0)
        for check in run_level:
            self.row(check, "  ", column)
        for target, items in groups:
            out.para(self.server(target), style="1")
            for item in items:
                if isinstance(item, CheckResult):
                    self.row(item, "  ", column)
                else:
                    count, reason = item
                    mark, paint = self.mark("skip")
                    text = self.words("report.skipped", skipped=count, reason=reason)
                    out.para(text, f"  {mark} ", mark=paint)

    def server(self, target: Target) -> str:
        security = self.words(f"settings.security.{target.security}")
        return f"{str(target.service).upper()}  {target.hostport}  {security}"

    def name(self, check: CheckResult) -> str:
        if self.verbose:
            return check.id
        return self.words("report.check." + check.id.rsplit(".", 1)[-1])

    def check_text(self, check: CheckResult) -> str:
        return summary_in(check, self.rules, self.lang)

    def row(self, check: CheckResult, indent: str, column: int) -> None:
        mark, paint = self.mark(str(check.status))
        first = f"{indent}{mark} {self.name(check).ljust(column)}  "
        self.out.para(self.check_text(check), first, mark=paint)

    def collapsed(self, results: Sequence[CheckResult]) -> list[CheckResult | tuple[int, str]]:
        """The checks of one server, a run of two or more skipped for the same reason (what
        a failure made impossible) as (count, reason); everything with --verbose."""
        if self.verbose:
            return list(results)
        items: list[CheckResult | tuple[int, str]] = []
        i = 0
        while i < len(results):
            check = results[i]
            j = i + 1
            if check.status is Status.SKIP:
                reason = self.check_text(check)
                while (
                    j < len(results)
                    and results[j].status is Status.SKIP
                    and self.check_text(results[j]) == reason
                ):
                    j += 1
                if j - i >= 2:
                    items.append((j - i, reason))
                    i = j
                    continue
            items.append(check)
            i += 1
        return items

    def transcripts(self, report: Report) -> None:
        for check in report.checks:
            obs = check.observation
            if not obs.transcript:
                continue
            where = obs.target.hostport if obs.target is not None else report.address
            self.out.blank()
            self.out.para(
                "── " + self.words("report.transcript", where=where, check=self.name(check)),
                style="2",
            )
            for line in obs.transcript:
                self.out.para(line, "    ", "      ")

    # -- findings --------------------------------------------------------------------------
    def place(self, finding: Finding) -> str:
        check = self.by_id.get(finding.check or "")
        if check is None or check.observation.target is None:
            return self.words("report.check." + (finding.check or "dns").rsplit(".", 1)[-1])
        target = check.observation.target
        return f"{str(target.service).upper()} {target.hostport}, {self.name(check)}"

    def finding(self, number: int, group: Sequence[Finding]) -> None:
        out = self.out
        lead = group[0]
        status = "info" if lead.severity is Severity.INFO else str(lead.severity)
        mark, paint = self.mark(status)
        prefix = f"{number}. "
        out.para(lead.title, f"{prefix}{mark} ", " " * (len(prefix) + len(mark) + 1), mark=paint)
        body = " " * len(prefix)
        places = self.places(group)
        if places:
            label = self.words("report.where") + ": "
            out.para("; ".join(places), body + label)
        for n, step in enumerate(lead.steps, 1):
            out.para(step, f"{body}{n}) ")
        evidence = list(dict.fromkeys(" ".join(f.evidence.split()) for f in group if f.evidence))
        limit = len(evidence) if self.verbose else MAX_EVIDENCE
        label = self.words("report.evidence") + ": "
        for text in evidence[:limit]:
            if not self.verbose and len(text) > MAX_EVIDENCE_CHARS:
                text = text[: MAX_EVIDENCE_CHARS - 3] + "..."
            out.para(text, body + label, style="2")
        if len(evidence) > limit:
            more = self.words("report.more", count=len(evidence) - limit)
            out.para(more, body + " " * len(label), style="2")
        for link in lead.links:
            out.para(link, body + self.words("report.links") + ": ", breakable=False)
        if self.verbose:
            checks = ", ".join(dict.fromkeys(f.check or "" for f in group))
            ids = self.words(
                "report.ids", category=str(lead.category), rule=lead.rule, checks=checks
            )
            out.para(ids, body, style="2")

    def places(self, group: Sequence[Finding]) -> list[str]:
        return list(dict.fromkeys(self.place(f) for f in group if f.check))

    def note(self, group: Sequence[Finding]) -> None:
        mark, paint = self.mark("info")
        places = self.places(group)
        text = group[0].title + (f" ({'; '.join(places)})" if places else "")
        self.out.para(text, f"  {mark} ", mark=paint)

    # -- settings that work, and the summary of a --config run --------------------------------
    def settings(self, report: Report) -> None:
        """Per service, what this run proved to work, ready to copy into a mail program (or
        that nothing did), then each alternative tried and how it went."""
        out = self.out
        out.heading(self.words("report.settings"))
        by_service = {r.service: r for r in report.recommended}
        for service in dict.fromkeys(t.service for t in report.servers):
            entry = by_service.get(service)
            first = f"  {str(service).upper():<5} "
            if entry is None:
                mark, paint = self.mark("fail")
                nothing = self.words("report.settings.nothing")
                out.para(f"{mark} {nothing}", first, mark=paint)
                continue
            security = self.words(f"settings.security.{entry.security}")
            text = f"{hostport(entry.host, entry.port)}  {security}"
            if entry.login:
                text += f"  {self.words('settings.login')}: {entry.login}"
            out.para(text, first)
        tried = self.words("report.settings.tried")
        for alternative in report.alternatives:
            out.para(
                f"{self.server(alternative.target)}: {self.outcome(alternative)}",
                f"  {tried}: ",
                "    ",
                style="2",
            )

    def outcome(self, alternative: Alternative) -> str:
        """``works``, or the first check that failed (else was skipped) and why."""
        if alternative.works:
            return self.words("report.settings.works")
        shown = next((c for c in alternative.checks if c.status is Status.FAIL), None) or next(
            (c for c in alternative.checks if c.status is Status.SKIP), None
        )
        return f"{self.name(shown)}: {self.check_text(shown)}" if shown is not None else ""

    def combined(self, multi: MultiReport) -> None:
        """One line per target: its verdict and what is wrong."""
        out = self.out
        failing = sum(1 for r in multi.reports if r.status is not Status.OK)
        out.heading(
            self.words("report.summary", targets=len(multi.reports), failing=failing or None)
        )
        for report in multi.reports:
            problems = _groups(f for f in report.findings if f.severity is not Severity.INFO)
            text = f"{report.label}: {self.verdict(report, problems)}"
            titles = list(dict.fromkeys(g[0].title for g in problems))
            if titles:
                text += ": " + "; ".join(titles)
            mark, paint = self.mark(str(report.status))
            out.para(text, f"  {mark} ", mark=paint)


def _groups(findings: Iterable[Finding]) -> list[list[Finding]]:
    """Identical advice (same rule, title and steps) from several checks, shown once with
    every place it applies to; most important first (the report's order is kept)."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.rule, f.title, f.steps), []).append(f)
    return sorted(groups.values(), key=lambda g: -severity_rank(g[0].severity))
