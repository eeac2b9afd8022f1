"""``maildiag explain``: diagnose a pasted error text, stdin, or every error line of a mail log.

Contract
--------
``explain_text(text, lang)`` -> findings, best first (the Python API ``maildiag.explain``); a
whole bounce message gets one finding per distinct reason of its recipients (maildiag.bounce,
maildiag.explain_mail).
``run_explain(text, file, as_json, lang, rules_dirs)`` prints the answer and returns the exit
code: 0 when an answer was printed (a match or an honest "no rule recognises this"), 3 on a usage
error (one line on stderr: no input, empty input, unreadable --file, unknown --lang, broken rule
base). TEXT ``-``, or no TEXT and no --file with stdin not a terminal, reads stdin; ``--file -``
reads stdin as a log or mailbox. Input that is not UTF-8 is decoded with the codec it fits
(maildiag.textinput) and the answer names it. Without --lang, the language the locale chose
(``maildiag.lang.locale_lang``: not C or POSIX), else Russian for a Russian text, else English.

This module is on the cold-start path: it imports neither rich nor yaml, and builds the JSON
without ``maildiag.models`` (whose dataclasses cost more than the whole answer).

Log mode (``--file``) reads in bounded memory (each line cut to MAX_LOG_LINE characters while it
is read, at most textinput.FILE_BUDGET bytes; the output says what was cut). A file that is an
mbox, a maildir or a message file is read as messages instead (maildiag.explain_mail), counting
bounces and recipients, not lines. A log holds Postfix, Exim and Sendmail lines (and Dovecot
logins): a cheap regex
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

from maildiag.errors import ExitCode, UsageError
from maildiag.lang import LANGS, locale_lang
from maildiag.rulebase import Match, RuleBase, RuleBaseError, extract_codes
from maildiag.sniff import looks_like_email
from maildiag.terminal import safe, unicode_ok

if TYPE_CHECKING:
    from maildiag.models import Finding

EXPLAIN_SCHEMA = "maildiag.explain/1"  # == models.EXPLAIN_SCHEMA (a test keeps them equal)
MAX_INPUT = 1 << 20  # characters of TEXT (stdin: textinput.MAX_INPUT bytes)
MAX_LOG_LINE = 4096  # characters of one log line we look at
MAX_MEMO = 200_000  # distinct normalised log messages remembered

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


def text_lang(text: str) -> str:
    """Russian when at least a fifth of the letters of a text (its first 20,000 characters) are
    Cyrillic, else English. (Plain string tests: no regex to compile on the cold path.)"""
    head = text[:20000]
    if head.isascii():
        return "en"
    cyrillic = sum(1 for ch in head if "\u0400" <= ch <= "\u04ff")
    latin = sum(1 for ch in head if ch.isascii() and ch.isalpha())
    return "ru" if cyrillic and cyrillic * 5 >= cyrillic + latin else "en"


def explain_text(text: str, lang: str = "en", rules: RuleBase | None = None) -> list[Finding]:
    """Findings for an error text, best first; an empty list when no rule applies."""
    rb = rules if rules is not None else _rules()
    if lang not in LANGS:
        lang = "en"
    finding = rb.finding
    return [finding(m, lang=lang) for m in explain_input(rb, text)[0]]


def explain_input(rules: RuleBase, text: str) -> tuple[list[Match], Any]:
    """What ``explain`` reports for a pasted text, and the bounce diagnosis (an
    ``explain_mail.BounceResult``) when the text is a whole message with a delivery report.

    Exim's "SMTP error from remote mail server after RCPT TO:<a@b>:" with the server's reply on
    the next line is read as one sentence (the stage and the reply belong together)."""
    if "\n" in text and "smtp error from remote" in text.lower():
        from maildiag.bounce import join_exim

        text = join_exim(text)
    if "\n" in text and looks_like_email(text):
        from maildiag.explain_mail import explain_bounce  # the email package: only for mail

        result = explain_bounce(rules, text)
        if result is not None:
            return result.matches, result
        from maildiag.bounce import human_text

        # a message without a report: its words, never its headers; delivery-status fields
        # pasted alone (RFC 3464) are not headers: their Diagnostic-Code is the server's words
        codes = re.findall(_DIAGNOSTIC, text, re.I | re.M)
        if codes:
            return rules.explain("\n".join(codes)), None
        body = text.replace("\r\n", "\n").partition("\n\n")[2]
        text = human_text(body)
    return rules.explain(text), None


_DIAGNOSTIC = r"^diagnostic-code:[ \t]{0,20}(?:\w{1,20};)?[ \t]{0,20}(\S[^\n]{0,2000})"


# --------------------------------------------------------------------------- command


def run_explain(
    text: str | None,
    file: str | None,
    as_json: bool,
    lang: str | None,
    rules_dirs: Sequence[str],
) -> int:
    """Print the diagnosis of TEXT (``-`` or piped stdin) or of ``file`` (a log or mailbox);
    ``UsageError`` when there is nothing to explain or it cannot be read."""
    if lang is not None and lang not in LANGS:
        raise UsageError(f"--lang must be en or ru, not {lang!r}")
    if text is not None and file is not None:
        raise UsageError("give either TEXT (or -) or --file LOG, not both")
    if text is None and file is None and _stdin_is_terminal():
        raise UsageError(NOTHING)
    try:
        rules = _rules(tuple(rules_dirs))
    except RuleBaseError as exc:
        raise UsageError(str(exc)) from exc
    if file is not None:
        return _run_file(rules, file, as_json, lang)
    decoded: tuple[str, str, bool]  # textinput.Decoded: the text, its encoding, whether cut
    if text is None or text == "-":
        from maildiag.textinput import read_stream

        try:
            stdin = sys.stdin
            buffer = getattr(stdin, "buffer", None)
            if buffer is not None:
                decoded = read_stream(buffer)
            else:  # a text stream put in place of stdin (an embedding program, a test)
                raw = stdin.read(MAX_INPUT + 1)
                decoded = (raw[:MAX_INPUT], "utf-8", len(raw) > MAX_INPUT)
        except (OSError, ValueError, AttributeError) as exc:
            if text is None:
                raise UsageError(NOTHING) from exc
            raise UsageError(f"cannot read stdin: {exc}") from exc
    elif not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text):
        from maildiag.textinput import read_argument  # bytes the OS could not decode as UTF-8

        decoded = read_argument(text)
    else:
        decoded = (text, "utf-8", False)  # the common case imports nothing more
    text, encoding, truncated = decoded
    if len(text) > MAX_INPUT:
        text, truncated = text[:MAX_INPUT], True
    if not text.strip():
        raise UsageError(EMPTY)
    if lang is None:
        lang = locale_lang() or text_lang(text)
    matches, bounce = explain_input(rules, text)
    out = sys.stdout
    if as_json:
        doc: dict[str, Any] = {
            "schema": EXPLAIN_SCHEMA,
            "input": text,
            "encoding": encoding,
            "truncated": truncated,
            "findings": [rules.finding_json(m, lang) for m in matches],
        }
        if bounce is not None:
            doc["recipients"] = [row.to_json() for row in bounce.rows]
        out.write(json.dumps(doc, ensure_ascii=not unicode_ok(out), indent=2) + "\n")
        return ExitCode.OK
    notes = _input_notes(rules, lang, encoding, truncated)
    if bounce is not None:
        out.write(safe(notes + render_bounce_text(rules, bounce, lang)))
    else:
        out.write(safe(notes + render_text(rules, text, matches, lang)))
    return ExitCode.OK


NOTHING = "nothing to explain: give the error TEXT, - to read stdin, or --file LOG"
EMPTY = (
    "nothing to explain: the input is empty (give the error TEXT, - to read stdin, or --file LOG)"
)


def _stdin_is_terminal() -> bool:
    """Whether stdin is absent or a terminal: then no TEXT means nothing to explain."""
    stdin = sys.stdin
    if stdin is None:
        return True
    try:
        return bool(stdin.isatty())
    except (AttributeError, ValueError, OSError):
        return True


def _input_notes(rules: RuleBase, lang: str, encoding: str, truncated: bool) -> str:
    """Lines that say how the input was read, when that is not plain UTF-8 taken whole."""
    lines = []
    if encoding not in ("utf-8", "ascii"):
        lines.append(rules.ui_text("input_encoding", lang, encoding=encoding))
    if truncated:
        lines.append(rules.ui_text("input_cut", lang, limit=_size(MAX_INPUT)))
    return "".join(line + "\n" for line in lines) + ("\n" if lines else "")


def _size(n: int) -> str:
    """A byte count as people read it: 1 MiB, 1 GiB, 4096 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def _run_file(rules: RuleBase, file: str, as_json: bool, lang: str | None) -> int:
    """``--file``: a log (grouped by diagnosis), or an mbox, a maildir or a message file."""
    from maildiag.explain_mail import MAX_MESSAGE_LINE, explain_mailbox, is_mailbox
    from maildiag.textinput import LineReader

    name = "stdin" if file == "-" else file
    if file != "-" and os.path.isdir(file):
        try:
            report = explain_mailbox(rules, file, lang or locale_lang() or "en", None)
        except OSError as exc:
            raise UsageError(f"cannot read --file {name}: {exc.strerror or exc}") from exc
        if not report["messages"]:
            raise UsageError(f"nothing to explain: no messages in {file}")
        return _print_file_report(rules, file, report, as_json, lang or "en", mailbox=True)
    try:
        if file == "-":
            fh: Any = sys.stdin.buffer
        else:
            fh = open(file, "rb")  # noqa: SIM115 - closed below
    except (OSError, AttributeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot read --file {name}: {reason}") from exc
    try:
        reader = LineReader(fh, max_line=MAX_LOG_LINE)
        head = reader.peek()
        if not head.strip():
            raise UsageError(f"nothing to explain: {name} is empty")
        if lang is None:
            lang = locale_lang() or text_lang(reader.head_text())
        if is_mailbox(file, head):
            reader.max_line = MAX_MESSAGE_LINE
            report = explain_mailbox(rules, file, lang, reader)
            mailbox = True
        else:
            report = explain_log(rules, reader, lang)
            report.update(
                encoding=reader.encoding,
                bytes_read=reader.bytes_read,
                truncated=reader.budget_reached,
                long_lines_cut=reader.lines_cut,
            )
            mailbox = False
    except OSError as exc:
        raise UsageError(f"cannot read --file {name}: {exc.strerror or exc}") from exc
    finally:
        if fh is not getattr(sys.stdin, "buffer", None):
            fh.close()
    return _print_file_report(rules, file, report, as_json, lang, mailbox=mailbox)


def _print_file_report(
    rules: RuleBase, file: str, report: dict[str, Any], as_json: bool, lang: str, *, mailbox: bool
) -> int:
    out = sys.stdout
    if as_json:
        doc = {"schema": EXPLAIN_SCHEMA, "input": file, **report}
        out.write(json.dumps(doc, ensure_ascii=not unicode_ok(out), indent=2) + "\n")
    elif mailbox:
        out.write(safe(render_mailbox_text(rules, report, lang)))
    else:
        out.write(safe(render_log_text(rules, report, lang)))
    return ExitCode.OK


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
            found = rules.explain(message)
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
    findings, out_groups = rules.tally(groups, matches, lang)
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
    lines.extend(_file_notes(rules, report, lang))
    if not report["groups"]:
        lines.append(ui("log_empty", lang))
        return "\n".join(lines) + "\n"
    lines.extend(_render_groups(rules, report, lang, "log_count", "lines"))
    return "\n".join(lines) + "\n"


def render_mailbox_text(rules: RuleBase, report: dict[str, Any], lang: str) -> str:
    """``--file`` on messages: counts of messages, bounces and recipients, then the groups."""
    ui = rules.ui_text
    lines = [
        ui(
            "mailbox_summary",
            lang,
            messages=report["messages"],
            bounces=report["bounces"],
            recipients=report["failed_recipients"],
            groups=len(report["groups"]),
        )
    ]
    lines.extend(_file_notes(rules, report, lang))
    if not report["groups"]:
        lines.append(ui("mailbox_empty", lang))
        return "\n".join(lines) + "\n"
    lines.extend(_render_groups(rules, report, lang, "mailbox_count", "recipients"))
    return "\n".join(lines) + "\n"


def _file_notes(rules: RuleBase, report: dict[str, Any], lang: str) -> list[str]:
    """What was not read as it is: another encoding, cut lines or messages, the byte budget."""
    from maildiag.textinput import FILE_BUDGET

    ui = rules.ui_text
    notes = []
    encoding = report.get("encoding", "utf-8")
    if encoding not in ("utf-8", "ascii"):
        notes.append(ui("input_encoding", lang, encoding=encoding))
    if report.get("long_lines_cut"):
        notes.append(ui("log_lines_cut", lang, count=report["long_lines_cut"], limit=MAX_LOG_LINE))
    if report.get("messages_cut"):
        from maildiag.explain_mail import MAX_MESSAGE

        notes.append(
            ui("messages_cut", lang, count=report["messages_cut"], limit=_size(MAX_MESSAGE))
        )
    if report.get("unreadable"):
        notes.append(ui("messages_unreadable", lang, count=report["unreadable"]))
    if report.get("truncated"):
        notes.append(ui("file_budget", lang, limit=_size(FILE_BUDGET)))
    return notes


def _render_groups(
    rules: RuleBase, report: dict[str, Any], lang: str, count_key: str, counted: str
) -> list[str]:
    """Each group headed by its count (``count_key``: "{lines} {lines_unit}", the word in the
    plural form the number takes)."""
    ui = rules.ui_text
    lines: list[str] = []
    by_rule = {f["rule"]: f for f in report["findings"]}
    for g in report["groups"]:
        lines.append("")
        head = f"{rules.words(count_key, lang, **{counted: g['count']})}: {g['title']}"
        if g["rule"]:
            head += f" [{g['category']}, {g['rule']}]"
        lines.append(head)
        lines.append(f"  {ui('log_sample', lang)}: {g['sample']}")
        f = by_rule.get(g["rule"])
        if f:
            lines.append(f"  {ui('steps', lang)}")
            lines.extend(f"    {n}. {s}" for n, s in enumerate(f["steps"], 1))
    return lines


MAX_SHOWN_RECIPIENTS = 10


def render_bounce_text(rules: RuleBase, result: Any, lang: str) -> str:
    """A pasted bounce: one full explanation per distinct reason, each with its recipients."""
    ui = rules.ui_text
    rows = result.rows
    lines = [ui("bounce_summary", lang, recipients=len(rows), reasons=len(result.matches))]
    if not result.matches:
        lines.append(ui("bounce_no_match", lang))
        return "\n".join(lines) + "\n"
    for m in result.matches:
        lines.append("")
        lines.extend(_render_one(rules, m, lang))
        mine = [
            r
            for r in rows
            if r.match and r.match.rule.id == m.rule.id and r.recipient and r.recipient.address
        ]
        if mine:
            shown = [
                r.recipient.address + (f" ({r.recipient.status})" if r.recipient.status else "")
                for r in mine[:MAX_SHOWN_RECIPIENTS]
            ]
            more = len(mine) - len(shown)
            if more:
                shown.append(ui("and_more", lang, count=more))
            lines.append(f"  {ui('bounce_recipients', lang)}: " + ", ".join(shown))
    unexplained = [r for r in rows if r.match is None and r.recipient and r.recipient.address]
    if unexplained:
        lines.append("")
        lines.append(
            f"{ui('log_unmatched', lang)}: "
            + ", ".join(r.recipient.address for r in unexplained[:MAX_SHOWN_RECIPIENTS])
        )
    return "\n".join(lines) + "\n"
