"""``--format html``: one self-contained page a person can attach to a helpdesk ticket.

The page holds, in the run's language: the verdict; the settings that work (when the report has
``recommended``); what is wrong and what to do (the findings with their steps, merged as in the
text report), then the notes; a timeline of every step drawn to scale (discovery and the clock
from the start, then each server's connect, greeting, TLS, capabilities and login side by side,
each bar as long as its ``duration_ms``), so a slow or silent step shows at a glance; the checks;
the certificates; and the dialogues with the servers (redacted: the transcripts the sessions
recorded) folded away in ``<details>``.

Self-contained: inline CSS, no script, no image, no font, no fetch of any kind — the page's
Content-Security-Policy (``default-src 'none'``) forbids the browser to load anything, so it
works offline and a hostile server reply could neither run code nor call home even if escaping
failed. And escaping does not fail: every text goes through ``html.escape`` (quotes included),
links are kept only when they are http(s) URLs. Every word comes from the rule base
(rules/ui-html.yaml, ui-report.yaml and the findings).

The page is ASCII-safe in any output encoding: ``maildiag.terminal.markup_for`` turns what the
encoding lacks into character references.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from maildiag.models import (
    CheckResult,
    Finding,
    MultiReport,
    Recommended,
    Report,
    Security,
    Severity,
    Status,
    Target,
)
from maildiag.report import summary_in
from maildiag.report.text import MAX_EVIDENCE, _groups
from maildiag.terminal import safe

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase

_MARKS = {"ok": "✔", "warn": "!", "fail": "✖", "skip": "–", "info": "i"}
# the order a session takes its steps: implicit TLS shakes hands before the greeting
_SSL_ORDER = ("connect", "tls", "greeting", "capabilities", "auth", "sender")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)

CSS = """
:root { --ok: #1a7f37; --warn: #9a6700; --fail: #cf222e; --skip: #8c959f; --info: #0969da;
  --line: #d0d7de; --soft: #f6f8fa; --text: #1f2328; --dim: #59636e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1.5rem; color: var(--text);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif;
  background: #fff; }
h1 { font-size: 1.5rem; margin: 0; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line);
  padding-bottom: .3rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
code, pre, .mono { font-family: ui-monospace, "Cascadia Mono", Consolas, "DejaVu Sans Mono",
  monospace; font-size: .9em; }
.verdict { border-left: .5rem solid var(--skip); background: var(--soft); padding: 1rem 1.2rem;
  border-radius: .4rem; }
.verdict.s-ok { border-color: var(--ok); } .verdict.s-warn { border-color: var(--warn); }
.verdict.s-fail { border-color: var(--fail); }
.sub { color: var(--dim); margin: .3rem 0 0; }
.mark { display: inline-block; width: 1.4em; text-align: center; font-weight: bold; }
.mark.s-ok { color: var(--ok); } .mark.s-warn { color: var(--warn); }
.mark.s-fail { color: var(--fail); } .mark.s-skip { color: var(--skip); }
.mark.s-info { color: var(--info); }
.finding { border: 1px solid var(--line); border-left: .3rem solid var(--skip);
  border-radius: .4rem; padding: .8rem 1rem; margin: .8rem 0; }
.finding.s-fail { border-left-color: var(--fail); }
.finding.s-warn { border-left-color: var(--warn); }
.finding.s-info { border-left-color: var(--info); }
.finding ol { margin: .4rem 0; padding-left: 1.6rem; }
.where, .seen, .links, .ids { margin: .3rem 0; color: var(--dim); }
.seen code { color: var(--text); background: var(--soft); padding: .05rem .3rem;
  border-radius: .2rem; word-break: break-word; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem;
  border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; color: var(--dim); }
td.summary { word-break: break-word; }
tr.server th { background: #eef1f4; }
.tl { margin: .5rem 0; }
.tl-row { display: grid; grid-template-columns: 16rem 1fr; gap: .2rem .8rem; margin: .4rem 0; }
.tl-label { font-weight: 600; overflow-wrap: anywhere; }
.tl-track { position: relative; height: 1.4rem; background: var(--soft);
  border: 1px solid var(--line); border-radius: .2rem; }
.tl-seg { position: absolute; top: 0; bottom: 0; min-width: 2px;
  border-right: 1px solid #fff; }
.tl-seg.s-ok { background: var(--ok); } .tl-seg.s-warn { background: var(--warn); }
.tl-seg.s-fail { background: var(--fail); } .tl-seg.s-skip { background: var(--skip); }
.tl-legend { grid-column: 2; color: var(--dim); font-size: .85rem; }
.tl-axis { display: grid; grid-template-columns: 16rem 1fr; gap: .8rem; color: var(--dim);
  font-size: .85rem; }
.tl-axis div:last-child { display: flex; justify-content: space-between; }
.note { color: var(--dim); font-size: .9rem; }
dl.cert { display: grid; grid-template-columns: 10rem 1fr; gap: .2rem 1rem; margin: .4rem 0 1rem; }
dl.cert dt { color: var(--dim); } dl.cert dd { margin: 0; overflow-wrap: anywhere; }
details { border: 1px solid var(--line); border-radius: .4rem; margin: .5rem 0; }
summary { cursor: pointer; padding: .4rem .8rem; background: var(--soft); }
pre { margin: 0; padding: .6rem .8rem; white-space: pre-wrap; word-break: break-all; }
footer { margin-top: 2.5rem; color: var(--dim); font-size: .85rem; }
"""


def render_html(
    report: Report | MultiReport,
    *,
    rules: RuleBase,
    lang: str = "en",
    verbose: bool = False,
    version: str = "",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> str:
    """The whole page. ``version``: maildiag's, for the footer (the command passes it: this
    layer does not import the package); ``now``: when the page is made (the report's end)."""
    page = _Page(rules, lang, verbose)
    reports = report.reports if isinstance(report, MultiReport) else (report,)
    first = reports[0]
    title = page.words("html.title", address=first.label if len(reports) == 1 else "")
    if len(reports) > 1:
        title = page.words("report.summary", targets=len(reports), failing=None)
    body: list[str] = []
    if isinstance(report, MultiReport):
        body += page.targets(report)
    for one in reports:
        body += page.report(one, multi=isinstance(report, MultiReport))
    when = now().astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    footer = page.words("html.generated", when=when, version=version)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f'<html lang="{_e(lang)}">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer">',
            f"<title>{_e(title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            *body,
            f"<footer>{_e(footer)}</footer>",
            "</body>",
            "</html>",
        ]
    )


def _e(text: Any) -> str:
    """Text as HTML: ``& < > " '`` escaped, so nothing a server sent can become markup; and
    what would reorder or hide text (bidi overrides, zero-width and control characters) shown
    as an escape (``maildiag.terminal.safe``), as on a terminal."""
    return html.escape(safe(str(text)), quote=True)


def _status(value: Status | Severity) -> str:
    return str(value)


class _Page:
    def __init__(self, rules: RuleBase, lang: str, verbose: bool) -> None:
        self.rules, self.lang, self.verbose = rules, lang, verbose

    def words(self, key: str, **params: Any) -> str:
        return self.rules.words(key, self.lang, **params)

    def mark(self, status: str) -> str:
        return f'<span class="mark s-{status}" aria-hidden="true">{_MARKS[status]}</span>'

    def check_name(self, check: CheckResult) -> str:
        name = self.words("report.check." + check.id.rsplit(".", 1)[-1])
        return f"{name} ({check.id})" if self.verbose else name

    def server(self, target: Target) -> str:
        security = self.words(f"settings.security.{target.security}")
        return f"{str(target.service).upper()} {target.hostport} {security}"

    def duration(self, ms: int) -> str:
        if ms >= 1000:
            return self.words("html.s", s=f"{ms / 1000:.1f}")
        return self.words("html.ms", ms=ms)

    # -- a --config run: one line per target --------------------------------------------------
    def targets(self, multi: MultiReport) -> list[str]:
        out = [f"<h1>{_e(self.words('html.targets'))}</h1>", "<table>"]
        for report in multi.reports:
            status = _status(report.status)
            out.append(
                f'<tr class="s-{status}"><td>{self.mark(status)}</td>'
                f"<td>{_e(report.label)}</td><td>{_e(self.verdict(report))}</td></tr>"
            )
        out.append("</table>")
        return out

    def verdict(self, report: Report) -> str:
        problems = _groups(f for f in report.findings if f.severity is not Severity.INFO)
        fails = sum(1 for g in problems if g[0].severity is Severity.FAIL)
        warns = sum(1 for g in problems if g[0].severity is Severity.WARN)
        if report.status is Status.FAIL:
            return self.words("report.verdict.fail", problems=max(fails, 1), warnings=warns or None)
        if report.status is Status.WARN:
            return self.words("report.verdict.warn", warnings=max(warns, 1))
        return self.words("report.verdict.ok")

    # -- one report ---------------------------------------------------------------------------
    def report(self, report: Report, *, multi: bool) -> list[str]:
        status = _status(report.status)
        headline = self.words(
            "report.headline",
            address=report.address
            if report.label == report.address
            else f"{report.label} ({report.address})",
            verdict=self.verdict(report),
            seconds=f"{report.duration_ms / 1000:.1f}",
            code=int(report.exit_code),
        )
        tag = "h2" if multi else "h1"
        out = [
            f'<section class="report" id="{_e("r-" + report.label)}">',
            f'<header class="verdict s-{status}"><{tag}>{self.mark(status)} {_e(headline)}</{tag}>',
        ]
        if report.status is Status.OK:
            out.append(f'<p class="sub">{_e(self.words("report.ok"))}</p>')
        source = report.discovery.source
        if report.servers and source is not None:
            found = self.words(
                "html.found",
                source=self.words(f"report.source.{source}"),
                provider=report.discovery.provider,
            )
            out.append(f'<p class="sub">{_e(found)}</p>')
        out.append("</header>")
        if report.recommended:
            out += self.settings(report.recommended)
        by_id = {c.id: c for c in report.checks}
        problems = _groups(f for f in report.findings if f.severity is not Severity.INFO)
        notes = _groups(f for f in report.findings if f.severity is Severity.INFO)
        if problems:
            out.append(f"<h2>{_e(self.words('report.findings'))}</h2>")
            for n, group in enumerate(problems, 1):
                out += self.finding(n, group, by_id)
        if notes:
            out.append(f"<h2>{_e(self.words('report.notes'))}</h2>")
            for n, group in enumerate(notes, 1):
                out += self.finding(n, group, by_id)
        out += self.timeline(report)
        out += self.checks(report)
        out += self.certificates(report)
        out += self.transcripts(report)
        out.append("</section>")
        return out

    def settings(self, recommended: Iterable[Recommended]) -> list[str]:
        out = [f"<h2>{_e(self.words('report.settings'))}</h2>", "<table>"]
        for entry in recommended:
            security = self.words(f"settings.security.{entry.security}")
            out.append(
                f"<tr><th>{_e(str(entry.service).upper())}</th>"
                f'<td class="mono">{_e(entry.host)}</td><td class="mono">{entry.port}</td>'
                f"<td>{_e(security)}</td>"
                f'<td class="mono">{_e(entry.login or "")}</td></tr>'
            )
        out.append("</table>")
        return out

    def place(self, finding: Finding, by_id: dict[str, CheckResult]) -> str:
        check = by_id.get(finding.check or "")
        if check is None or check.observation.target is None:
            return self.words("report.check." + (finding.check or "dns").rsplit(".", 1)[-1])
        target = check.observation.target
        return f"{str(target.service).upper()} {target.hostport}, {self.check_name(check)}"

    def finding(
        self, number: int, group: Sequence[Finding], by_id: dict[str, CheckResult]
    ) -> list[str]:
        lead = group[0]
        status = "info" if lead.severity is Severity.INFO else _status(lead.severity)
        out = [
            f'<article class="finding s-{status}">',
            f"<h3>{self.mark(status)} {number}. {_e(lead.title)}</h3>",
        ]
        places = list(dict.fromkeys(self.place(f, by_id) for f in group if f.check))
        if places:
            out.append(
                f'<p class="where">{_e(self.words("report.where"))}: {_e("; ".join(places))}</p>'
            )
        if lead.steps:
            out.append("<ol>" + "".join(f"<li>{_e(s)}</li>" for s in lead.steps) + "</ol>")
        evidence = list(dict.fromkeys(" ".join(f.evidence.split()) for f in group if f.evidence))
        limit = len(evidence) if self.verbose else MAX_EVIDENCE
        for text in evidence[:limit]:
            out.append(
                f'<p class="seen">{_e(self.words("report.evidence"))}: <code>{_e(text)}</code></p>'
            )
        if len(evidence) > limit:
            more = self.words("report.more", count=len(evidence) - limit)
            out.append(f'<p class="seen">{_e(more)}</p>')
        links = [link for link in lead.links if link.startswith(("https://", "http://"))]
        if links:
            anchors = ", ".join(
                f'<a href="{_e(link)}" rel="noopener noreferrer">{_e(link)}</a>' for link in links
            )
            out.append(f'<p class="links">{_e(self.words("report.links"))}: {anchors}</p>')
        if self.verbose:
            checks = ", ".join(dict.fromkeys(f.check or "" for f in group))
            ids = self.words(
                "report.ids", category=str(lead.category), rule=lead.rule, checks=checks
            )
            out.append(f'<p class="ids">{_e(ids)}</p>')
        out.append("</article>")
        return out

    # -- the timeline -------------------------------------------------------------------------
    def timeline(self, report: Report) -> list[str]:
        """Rows of (label, [(start ms, duration ms, status, step name)]) drawn to one scale."""
        rows: list[tuple[str, list[tuple[int, int, str, str]]]] = []
        run_checks, servers = report.by_server()
        run_level = {c.id: c for c in run_checks}
        discovery_ms = 0
        for check_id in ("dns", "clock"):
            check = run_level.get(check_id)
            if check is None:
                continue
            ms = check.observation.duration_ms
            if check_id == "dns":
                discovery_ms = ms
            if check.status is not Status.SKIP or ms > 0:
                rows.append((self.check_name(check), [(0, ms, _status(check.status), "")]))
        for target in report.servers:
            checks = {c.id.rsplit(".", 1)[-1]: c for c in servers[target]}
            order = _SSL_ORDER if target.security is Security.SSL else tuple(checks)
            start = discovery_ms  # the sessions start once discovery has found the servers
            segments = []
            for name in order:
                check = checks.get(name)
                if check is None or check.status is Status.SKIP:
                    continue  # a step not taken
                ms = check.observation.duration_ms
                segments.append((start, ms, _status(check.status), self.check_name(check)))
                start += ms
            if segments:
                rows.append((self.server(target), segments))
        if not rows:
            return []
        scale = max(max(s + d for s, d, _, _ in segs) for _, segs in rows) or 1
        out = [
            f"<h2>{_e(self.words('html.timeline'))}</h2>",
            f'<p class="note">{_e(self.words("html.timeline.note"))}</p>',
            '<div class="tl">',
        ]
        for label, segments in rows:
            bars = []
            legend = []
            for start, ms, status, name in segments:
                left, width = 100 * start / scale, 100 * ms / scale
                said = f"{name} {self.duration(ms)}".strip()
                bars.append(
                    f'<div class="tl-seg s-{status}" style="left:{left:.2f}%;width:{width:.2f}%"'
                    f' title="{_e(said)}"></div>'
                )
                legend.append(said)
            out.append(
                f'<div class="tl-row"><div class="tl-label">{_e(label)}</div>'
                f'<div class="tl-track">{"".join(bars)}</div>'
                f'<div class="tl-legend">{_e(" · ".join(legend))}</div></div>'
            )
        out.append(
            f'<div class="tl-axis"><div></div><div><span>0</span>'
            f"<span>{_e(self.duration(scale // 2))}</span>"
            f"<span>{_e(self.duration(scale))}</span></div></div>"
        )
        out.append("</div>")
        return out

    # -- checks, certificates, dialogues ---------------------------------------------------------
    def checks(self, report: Report) -> list[str]:
        out = [
            f"<h2>{_e(self.words('report.checks'))}</h2>",
            "<table>",
            f"<tr><th></th><th>{_e(self.words('html.col.check'))}</th>"
            f"<th>{_e(self.words('html.col.result'))}</th>"
            f"<th>{_e(self.words('html.col.time'))}</th></tr>",
        ]
        current: Target | None = None
        for check in report.checks:
            target = check.observation.target
            if target is not None and target != current:
                current = target
                server = _e(self.server(target))
                out.append(f'<tr class="server"><th colspan="4">{server}</th></tr>')
            status = _status(check.status)
            summary = summary_in(check, self.rules, self.lang)
            out.append(
                f'<tr class="s-{status}"><td>{self.mark(status)}</td>'
                f"<td>{_e(self.check_name(check))}</td>"
                f'<td class="summary">{_e(summary)}</td>'
                f'<td class="num">{_e(self.duration(check.observation.duration_ms))}</td></tr>'
            )
        out.append("</table>")
        return out

    def certificates(self, report: Report) -> list[str]:
        out: list[str] = []
        for check in report.checks:
            data = check.observation.data
            target = check.observation.target
            if not check.id.endswith(".tls") or target is None or not data.get("subject"):
                continue
            rows = [("html.cert.protocol", f"{data.get('version', '')} {data.get('cipher', '')}")]
            rows.append(("html.cert.subject", data.get("subject", "")))
            rows.append(("html.cert.names", ", ".join(data.get("sans") or ())))
            rows.append(("html.cert.issuer", data.get("issuer", "")))
            period = self.words(
                "html.cert.period",
                not_before=str(data.get("not_before", ""))[:10],
                not_after=str(data.get("not_after", ""))[:10],
            )
            days = data.get("days_to_expiry")
            if isinstance(days, int):
                key = "html.cert.left" if days >= 0 else "html.cert.expired"
                period += "; " + self.words(key, days=abs(days))
            rows.append(("html.cert.valid", period))
            verified = data.get("verify_message") or self.words("html.cert.trusted")
            rows.append(("html.cert.verified", verified))
            chain = [
                f"{e.get('subject', '')} ← {e.get('issuer', '')}"
                for e in data.get("chain") or ()
                if isinstance(e, dict) and e.get("subject")
            ]
            if len(chain) > 1:
                rows.append(("html.cert.chain", " | ".join(chain)))
            if not out:
                out.append(f"<h2>{_e(self.words('html.certificates'))}</h2>")
            out.append(f"<h3>{_e(self.server(target))}</h3>")
            out.append('<dl class="cert">')
            for key, value in rows:
                out.append(f"<dt>{_e(self.words(key))}</dt><dd>{_e(value)}</dd>")
            out.append("</dl>")
        return out

    def transcripts(self, report: Report) -> list[str]:
        shown = [c for c in report.checks if c.observation.transcript]
        if not shown:
            return []
        out = [f"<h2>{_e(self.words('html.transcripts'))}</h2>"]
        for check in shown:
            target = check.observation.target
            where = target.hostport if target is not None else report.address
            label = self.words("report.transcript", where=where, check=self.check_name(check))
            text = "\n".join(check.observation.transcript)
            out.append(f"<details><summary>{_e(label)}</summary><pre>{_e(text)}</pre></details>")
        return out
