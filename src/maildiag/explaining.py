"""``maildiag explain``: diagnose a pasted error text, stdin, or every error line of a mail log.

Contract
--------
``explain_text(text, lang)`` -> findings, best first (the Python API ``maildiag.explain``).
``run_explain(text, file, as_json, lang, rules_dirs)`` prints the answer and returns the exit
code: 0 when an answer was printed (a match or an honest "no rule recognises this"), 3 on a usage
error (one line on stderr: no input, unreadable --file, unknown --lang, broken rule base).

This module is on the cold-start path: it imports neither rich nor yaml, and builds the JSON
without ``maildiag.models`` (whose dataclasses cost more than the whole answer).

Log mode (``--file``) reads Postfix, Exim and Sendmail lines (and Dovecot logins): a cheap regex
picks the lines that report a failure, the server's words are cut out of each, and lines whose
words differ only in addresses, IPs, ids and numbers share one diagnosis (memoised), so a large
log costs little more than reading it. Findings are grouped by rule with a count and one sample.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from maildiag.lang import LANGS, default_lang
from maildiag.rulebase import Match, RuleBase, RuleBaseError, extract_codes
from maildiag.terminal import safe

if TYPE_CHECKING:
    from maildiag.models import Finding

EXPLAIN_SCHEMA = "maildiag.explain/1"  # == models.EXPLAIN_SCHEMA (a test keeps them equal)
MAX_INPUT = 1 << 20  # bytes of TEXT or stdin we read
MAX_LOG_LINE = 4096  # characters of one log line we look at
MAX_FINDINGS = 5  # an explanation lists at most this many rules
MAX_MEMO = 200_000  # distinct normalised log messages remembered
EXIT_OK, EXIT_USAGE = 0, 3

_RULES: dict[tuple[str, ...], RuleBase] = {}
# The raw environment (bytes on POSIX), read without os.environ's per-call decoding: the
# built-in rule base is looked up on every ``maildiag.explain`` call.
_ENVIRON = os.environ
_ENV_DATA: Any = getattr(os.environ, "_data", None)
_ENV_KEY: Any = None
if isinstance(_ENV_DATA, dict):
    try:
        _ENV_KEY = getattr(os.environ, "encodekey")("MAILDIAG_RULES")  # noqa: B009
    except (AttributeError, TypeError, ValueError):
        _ENV_DATA = None
_DEFAULT: list[Any] = [object(), (), None]  # the raw MAILDIAG_RULES value, the key, the base


def _rules(dirs: Sequence[str] = ()) -> RuleBase:
    """The rule base for these extra directories, loaded once per process."""
    if not dirs and _ENV_DATA is not None and os.environ is _ENVIRON:
        raw, key, cached = _DEFAULT
        rb = _RULES.get(key)  # None once _RULES is cleared
        if rb is not None and rb is cached and _ENV_DATA.get(_ENV_KEY) == raw:
            return rb
        raw = _ENV_DATA.get(_ENV_KEY)
        key, rb = _rules_for(())
        _DEFAULT[:] = [raw, key, rb]
        return rb
    return _rules_for(dirs)[1]


def _rules_for(dirs: Sequence[str]) -> tuple[tuple[str, ...], RuleBase]:
    key = (os.environ.get("MAILDIAG_RULES", ""), *map(str, dirs))
    rb = _RULES.get(key)
    if rb is None:
        rb = _RULES[key] = RuleBase.load(dirs)
    return key, rb


def explain_matches(rules: RuleBase, text: str) -> list[Match]:
    """What ``explain`` reports: text rules if any matched, else the reply-code layer."""
    matches = rules.match(text, codes_as_fallback=True)
    if not matches:
        return matches
    # with codes_as_fallback the matches are either all text rules or all code rules
    if matches[0].via != "code":
        if len(matches) == 1:
            return matches
        # one explanation per category: a provider's rule and the generic one say the same
        seen: set[str] = set()
        out = []
        for m in matches:
            if m.via != "code" and m.rule.category not in seen:
                seen.add(m.rule.category)
                out.append(m)
        return out[:MAX_FINDINGS]
    # only the reply code is known: its most specific meaning, enhanced and basic
    best: dict[int, Match] = {}
    for m in matches:
        best.setdefault(m.rank[4], m)
    return [best[level] for level in sorted(best, reverse=True)]


def explain_text(text: str, lang: str = "en", rules: RuleBase | None = None) -> list[Finding]:
    """Findings for an error text, best first; an empty list when no rule applies."""
    rb = rules if rules is not None else _rules()
    if lang not in LANGS:
        lang = "en"
    finding = rb.finding
    return [finding(m, lang=lang) for m in explain_matches(rb, text)]


def finding_json(
    rules: RuleBase, match: Match, lang: str, evidence: str | None = None
) -> dict[str, Any]:
    """``Finding.to_json()`` of a match, built without importing maildiag.models."""
    title, steps = rules.render(match, lang=lang)
    return {
        "rule": match.rule.id,
        "category": match.rule.category,
        "severity": match.rule.severity,
        "check": None,
        "title": title,
        "steps": steps,
        "evidence": match.evidence if evidence is None else evidence,
    }


# --------------------------------------------------------------------------- command


def run_explain(
    text: str | None,
    file: str | None,
    as_json: bool,
    lang: str | None,
    rules_dirs: Sequence[str],
) -> int:
    """Print the diagnosis of TEXT (``-`` = stdin) or of each error line of ``file``."""
    if lang is None:
        lang = default_lang()
    if lang not in LANGS:
        return _usage(f"--lang must be en or ru, not {lang!r}")
    if text is not None and file is not None:
        return _usage("give either TEXT (or -) or --file LOG, not both")
    if text is None and file is None:
        return _usage("nothing to explain: give the error TEXT, - to read stdin, or --file LOG")
    try:
        rules = _rules(tuple(rules_dirs))
    except RuleBaseError as exc:
        return _usage(str(exc))
    out = sys.stdout
    if file is not None:
        try:
            fh = open(file, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        except OSError as exc:
            return _usage(f"cannot read --file {file}: {exc.strerror or exc}")
        with fh:
            try:
                report = explain_log(rules, fh, lang)
            except OSError as exc:
                return _usage(f"cannot read --file {file}: {exc.strerror or exc}")
        if as_json:
            report_json = {"schema": EXPLAIN_SCHEMA, "input": file, **report}
            out.write(json.dumps(report_json, ensure_ascii=False, indent=2) + "\n")
        else:
            out.write(safe(render_log_text(rules, report, lang)))
        return EXIT_OK
    if text == "-":
        try:
            text = sys.stdin.read(MAX_INPUT)
        except (OSError, UnicodeDecodeError) as exc:
            return _usage(f"cannot read stdin: {exc}")
    assert text is not None
    text = text[:MAX_INPUT]
    matches = explain_matches(rules, text)
    if as_json:
        doc = {
            "schema": EXPLAIN_SCHEMA,
            "input": text,
            "findings": [finding_json(rules, m, lang) for m in matches],
        }
        out.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(safe(render_text(rules, text, matches, lang)))
    return EXIT_OK


def _usage(message: str) -> int:
    sys.stderr.write(f"maildiag explain: {message}\n")
    return EXIT_USAGE


def render_text(rules: RuleBase, text: str, matches: list[Match], lang: str) -> str:
    """The human answer: the best explanation in full, the others by title."""
    ui = rules.ui_text
    lines: list[str] = []
    if not matches:
        basic, _enhanced = extract_codes(text)
        if basic and basic.startswith(("2", "3")):
            lines.append(ui("success_reply", lang, code=basic))
        else:
            lines.append(ui("no_match", lang))
            lines.append(ui("no_match_hint", lang))
        return "\n".join(lines) + "\n"
    if all(m.via == "code" for m in matches):
        lines.append(ui("code_only", lang))
        lines.append("")
    best = matches[0]
    lines.extend(_render_one(rules, best, lang))
    if len(matches) > 1:
        lines.append("")
        lines.append(ui("other_findings", lang))
        for m in matches[1:]:
            title, _steps = rules.render(m, lang=lang)
            lines.append(f"  - {title} [{m.rule.category}, {m.rule.id}]")
    return "\n".join(lines) + "\n"


def _render_one(rules: RuleBase, m: Match, lang: str, evidence: str | None = None) -> list[str]:
    ui = rules.ui_text
    title, steps = rules.render(m, lang=lang)
    lines = [title, f"  {ui('category', lang)}: {m.rule.category} ({m.rule.severity}), {m.rule.id}"]
    shown = m.evidence if evidence is None else evidence
    if shown:
        lines.append(f"  {ui('evidence', lang)}: {shown}")
    lines.append(ui("steps", lang))
    lines.extend(f"  {n}. {step}" for n, step in enumerate(steps, 1))
    if m.rule.links:
        lines.append(f"{ui('more', lang)}: " + " ".join(m.rule.links))
    return lines


# --------------------------------------------------------------------------- log mode

# A line worth diagnosing: a bounce, deferral, rejection, failed login, TLS or connect failure.
# Plain substring tests on the lower-cased line (much cheaper than one big regex).
_LOG_ERROR = (
    "status=bounced",
    "status=deferred",
    "status=undeliverable",
    "status=expired",
    "reject:",
    "reject=",
    "rejected",
    "noqueue",
    "authentication fail",
    "authenticator failed",
    "auth failed",
    "warning: ",
    "error: ",
    "fatal: ",
    " ** ",
    " == ",
    "stat=",
    "dsn=4.",
    "dsn=5.",
    "lost connection",
    "timed out",
    "refused",
    "smtp error from remote",
    "certificate verif",
)
# Uninteresting even though they matched above (noise every busy Postfix logs).
_LOG_NOISE = (
    "status=sent",
    "stat=sent",
    ": disconnect from ",
    ": connect from ",
    "did not issue ",
)
# What the server (or the MTA) said, after the syslog prefix and the queue id.
_LOG_STATUS = re.compile(r"status=\w{1,20} \((.{1,4000})\)\s{0,4}$")
_LOG_REJECT = re.compile(r"\breject: (.{1,4000})$")
_LOG_SYSLOG = re.compile(
    r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S{0,20})"
    r" \S{1,100} \S{1,100}?(?:\[\d{1,10}\])?: (?:[0-9A-Za-z]{5,20}: )?"
)
_LOG_EXIM = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?(?: [+-]\d{4})?(?: \[\d{1,10}\])?"
    r"(?: [0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})? "
)
# The memo key of a message: digits hashed, <addresses> and [ids] emptied, Gmail's trace id cut,
# and the reply codes kept in front, so lines that differ only in those share one diagnosis.
_DIGITS = str.maketrans("0123456789", "##########")
_ANGLE = re.compile(r"<[^<>]{0,300}>")
_SQUARE = re.compile(r"\[[^\[\]]{0,100}\]")
_CODES = re.compile(r"(?<![\w.])[245]\d\d[ -](?:[245]\.\d\.\d{1,3})?")


def memo_key(message: str) -> str:
    codes = _CODES.search(message)
    key = message.translate(_DIGITS)
    if "<" in key:
        key = _ANGLE.sub("<>", key)
    if "[" in key:
        key = _SQUARE.sub("[]", key)
    if "@" in key:
        key = " ".join("@" if "@" in word else word for word in key.split(" "))
    cut = key.find(" - gsmtp")
    if cut > 0:
        key = key[: key.rfind(" ", 0, cut) + 1] + key[cut:]
    return (codes.group() if codes else "") + "|" + key


def log_message(line: str) -> str | None:
    """The part of a log line to diagnose, or None when the line reports no failure."""
    low = line.lower()
    for needle in _LOG_NOISE:  # first: the bulk of a busy log is deliveries and connections
        if needle in low:
            return None
    for needle in _LOG_ERROR:
        if needle in low:
            break
    else:
        return None
    m = _LOG_STATUS.search(line)
    if m:
        return m.group(1)
    m = _LOG_REJECT.search(line)
    if m:
        return m.group(1)
    m = _LOG_SYSLOG.match(line) or _LOG_EXIM.match(line)
    return line[m.end() :] if m else line


def explain_log(rules: RuleBase, lines: Any, lang: str) -> dict[str, Any]:
    """Group the failure lines of a log by diagnosis: counts, one sample line each."""
    memo: dict[str, str | None] = {}
    groups: dict[str | None, dict[str, Any]] = {}
    matches: dict[str, Match] = {}
    total = errors = 0
    for raw in lines:
        total += 1
        line = raw[:MAX_LOG_LINE].rstrip("\r\n")
        message = log_message(line)
        if message is None:
            continue
        errors += 1
        key = memo_key(message)
        if key in memo:
            rule_id = memo[key]
        else:
            found = explain_matches(rules, message)
            rule_id = found[0].rule.id if found else None
            if found and rule_id not in matches:
                matches[rule_id] = found[0]  # type: ignore[index]
            if len(memo) >= MAX_MEMO:
                memo.clear()
            memo[key] = rule_id
        group = groups.get(rule_id)
        if group is None:
            groups[rule_id] = {"count": 1, "sample": line.strip()}
        else:
            group["count"] += 1
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0] or "~"))
    out_groups = []
    findings = []
    for rule_id, g in ordered:
        if rule_id is None:
            out_groups.append(
                {
                    "rule": None,
                    "category": None,
                    "severity": None,
                    "title": rules.ui_text("log_unmatched", lang),
                    "count": g["count"],
                    "sample": g["sample"],
                }
            )
            continue
        m = matches[rule_id]
        f = finding_json(rules, m, lang, evidence=g["sample"])
        findings.append(f)
        out_groups.append(
            {
                "rule": rule_id,
                "category": f["category"],
                "severity": f["severity"],
                "title": f["title"],
                "count": g["count"],
                "sample": g["sample"],
            }
        )
    return {"lines": total, "errors": errors, "findings": findings, "groups": out_groups}


def render_log_text(rules: RuleBase, report: dict[str, Any], lang: str) -> str:
    ui = rules.ui_text
    lines = [
        ui(
            "log_summary",
            lang,
            lines=report["lines"],
            errors=report["errors"],
            groups=len(report["groups"]),
        )
    ]
    if not report["groups"]:
        lines.append(ui("log_empty", lang))
        return "\n".join(lines) + "\n"
    by_rule = {f["rule"]: f for f in report["findings"]}
    for g in report["groups"]:
        lines.append("")
        head = f"{g['count']} {ui('log_count', lang)}: {g['title']}"
        if g["rule"]:
            head += f" [{g['category']}, {g['rule']}]"
        lines.append(head)
        lines.append(f"  {ui('log_sample', lang)}: {g['sample']}")
        f = by_rule.get(g["rule"])
        if f:
            lines.append(f"  {ui('steps', lang)}")
            lines.extend(f"    {n}. {s}" for n, s in enumerate(f["steps"], 1))
    return "\n".join(lines) + "\n"
