"""``explain`` for whole messages: a pasted bounce, an .eml file, an mbox, a maildir.

Contract
--------
``explain_bounce(rules, text)`` reads a pasted message with ``maildiag.bounce.parse`` and returns a
``BounceResult``: one ``Match`` per distinct reason (the rule of the first recipient that has it
comes first) and one ``Row`` per failed recipient (its facts and its rule), or None when the
message holds nothing to diagnose (then the caller explains its words as a plain text).

How a recipient is explained, most telling first: the rule that recognises its Diagnostic-Code
(with its Status) or its share of the report's words; a precise enhanced status code (x.y.z with
z > 0) of those; the rule that recognises the report's words as a whole; any code. The report's
words as a whole replace a recipient's own match only when their rule has a higher priority (the
words "account is disabled" beside a remote server's "550 user unknown").

``explain_mailbox(rules, path, lang)`` reads an mbox, a maildir (or any directory of message
files) or one message file, and groups the failed recipients of all its bounces by rule, as the log
mode groups lines: the JSON shape of ``explain --file`` with ``messages``, ``bounces`` and
``failed_recipients`` counts. It reads within the byte budget of ``maildiag.textinput`` and at most
``MAX_MESSAGE`` bytes of each message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from maildiag.bounce import Bounce, Recipient, parse
from maildiag.rulebase import Match, RuleBase
from maildiag.rulebase.base import MAX_FINDINGS
from maildiag.sniff import looks_like_email
from maildiag.textinput import FILE_BUDGET, LineReader

__all__ = [
    "MAX_MESSAGE",
    "BounceResult",
    "Row",
    "explain_bounce",
    "explain_mailbox",
    "is_mailbox",
]

MAX_MESSAGE = 4 << 20  # bytes of one message we read (the report comes before the returned copy)
MAX_MESSAGE_LINE = 16384  # characters of one line of a message in an mbox
MAX_MEMO = 20_000


@dataclass(frozen=True, slots=True)
class Row:
    """One failed recipient and what explains it (``match`` None: nothing does)."""

    recipient: Recipient | None
    match: Match | None

    def to_json(self) -> dict[str, Any]:
        r = self.recipient
        return {
            "address": r.address if r else None,
            "action": r.action if r else None,
            "status": r.status if r else None,
            "remote_mta": r.remote_mta if r else None,
            "diagnostic": r.diagnostic if r else None,
            "rule": self.match.rule.id if self.match else None,
            "category": self.match.rule.category if self.match else None,
        }


@dataclass(frozen=True, slots=True)
class BounceResult:
    matches: list[Match]  # one per distinct reason, in the order of the recipients
    rows: list[Row]
    bounce: Bounce


# --------------------------------------------------------------------------- one message


class _Matcher:
    """``RuleBase.explain`` with a memo: recipients of one report (and of a mailbox) repeat."""

    def __init__(self, rules: RuleBase) -> None:
        self.rules = rules
        self._memo: dict[str, list[Match]] = {}

    def __call__(self, text: str) -> list[Match]:
        found = self._memo.get(text)
        if found is None:
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            found = self._memo[text] = self.rules.explain(text)
        return found


def _text_match(found: list[Match]) -> Match | None:
    return found[0] if found and found[0].via != "code" else None


def _precise_code(m: Match) -> bool:
    """An enhanced status code with a detail (5.1.1, 4.2.2): more than "failed" (5.0.0, 5.7.0)."""
    return m.rank[4] == 2 and bool(m.code) and not str(m.code).endswith(".0")


def _explain_recipient(
    match: _Matcher, r: Recipient | None, human: str, human_best: list[Match | None]
) -> Match | None:
    own: list[str] = []
    if r is not None:
        if r.diagnostic:
            diag = r.diagnostic
            if r.status and r.status not in diag:
                diag += "\nStatus: " + r.status
            own.append(diag)
        if r.text:
            own.append(r.text)
        if r.status:
            own.append("Status: " + r.status)

    def whole() -> Match | None:
        if not human_best:
            human_best.append(_text_match(match(human)) if human.strip() else None)
        return human_best[0]

    codes: list[Match] = []
    for text in own:
        found = match(text)
        best = _text_match(found)
        if best is not None:
            other = whole()
            if other is not None and other.rule.priority > best.rule.priority:
                return other
            return best
        if found:
            codes.append(found[0])
    precise = [m for m in codes if _precise_code(m)]
    if precise:
        return precise[0]
    other = whole()
    if other is not None:
        return other
    if codes:
        return codes[0]
    found = match(human) if human.strip() else []
    return found[0] if found else None


def diagnose(match: _Matcher, bounce: Bounce) -> list[Row]:
    """One row per failed recipient (every recipient when the report marks none as failed)."""
    recipients: list[Recipient | None] = [r for r in bounce.recipients if r.failed]
    if not recipients and not bounce.recipients:
        recipients = [None]  # a report that names nobody: its words alone
    human_best: list[Match | None] = []
    return [Row(r, _explain_recipient(match, r, bounce.text, human_best)) for r in recipients]


def _distinct(rows: list[Row]) -> list[Match]:
    seen: set[str] = set()
    out: list[Match] = []
    for row in rows:
        m = row.match
        if m is not None and m.rule.id not in seen:
            seen.add(m.rule.id)
            out.append(m)
    return out[:MAX_FINDINGS]


def explain_bounce(rules: RuleBase, text: str | bytes) -> BounceResult | None:
    """The diagnosis of a whole message, or None when it holds no report to diagnose."""
    bounce = parse(text)
    if bounce is None:
        return None
    rows = diagnose(_Matcher(rules), bounce)
    matches = _distinct(rows)
    if not matches and not bounce.dsn:
        return None  # no report and nothing recognised: explain the words as a plain text
    return BounceResult(matches, rows, bounce)


# --------------------------------------------------------------------------- mailboxes


def is_mailbox(path: str, head: bytes) -> bool:
    """Whether ``--file`` names messages rather than a log: a directory (maildir), an mbox (its
    first line a "From " separator) or a single message (a header block at its start)."""
    if os.path.isdir(path):
        return True
    text = head[:8192].decode("utf-8", "replace")
    if text.startswith("From ") and "\n" in text:
        return looks_like_email(text.split("\n", 1)[1])
    return looks_like_email(text)


def _maildir_files(path: str) -> list[str]:
    """A maildir's messages (cur/ and new/), or the regular files of a plain directory."""
    dirs = [os.path.join(path, d) for d in ("cur", "new") if os.path.isdir(os.path.join(path, d))]
    files: list[str] = []
    for d in dirs or [path]:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        files.extend(
            e.path
            for e in entries
            if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
        )
    return files


class _Budget:
    def __init__(self, total: int) -> None:
        self.left = total
        self.reached = False
        self.read = 0
        self.cut = 0  # messages longer than MAX_MESSAGE
        self.unreadable = 0  # message files that could not be read


def _read_file(path: str, budget: _Budget) -> bytes:
    if budget.left <= 0:
        budget.reached = True
        return b""
    want = min(MAX_MESSAGE, budget.left)
    try:
        with open(path, "rb") as fh:
            data = fh.read(want + 1)
    except OSError:
        budget.unreadable += 1  # a message we may not read, or one gone meanwhile
        return b""
    if len(data) > want:
        data = data[:want]
        if want == MAX_MESSAGE:
            budget.cut += 1
        else:
            budget.reached = True
    budget.left -= len(data)
    budget.read += len(data)
    return data


def _mbox_messages(reader: LineReader, budget: _Budget) -> Iterator[str]:
    """The messages of an mbox: split at "From " lines that follow a blank line."""
    lines: list[str] = []
    size = 0
    cut = False
    blank = True
    for line in reader:
        if line.startswith("From ") and blank and (lines or size):
            yield "\n".join(lines)
            lines, size, cut = [], 0, False
            blank = False
            continue
        blank = not line.strip()
        if cut:
            continue
        size += len(line) + 1
        if size > MAX_MESSAGE:
            cut = True
            budget.cut += 1
            continue
        lines.append(line[1:] if line.startswith(">From ") else line)
    if lines:
        yield "\n".join(lines)


def explain_mailbox(
    rules: RuleBase, path: str, lang: str, reader: LineReader | None
) -> dict[str, Any]:
    """Group the failed recipients of every bounce in a mailbox by rule (see module docstring)."""
    match = _Matcher(rules)
    budget = _Budget(FILE_BUDGET)
    groups: dict[str | None, dict[str, Any]] = {}
    first: dict[str, Match] = {}
    messages = bounces = failed = 0
    encoding = "utf-8"
    if os.path.isdir(path):
        sources: Iterator[str | bytes] = (_read_file(f, budget) for f in _maildir_files(path))
    else:
        assert reader is not None
        sources = _mbox_messages(reader, budget)
    for data in sources:
        if not data:
            continue
        messages += 1
        bounce = parse(data)
        if bounce is None:
            continue
        rows = diagnose(match, bounce)
        if not bounce.dsn and not any(r.match for r in rows):
            continue  # an ordinary message, no delivery report
        bounces += 1
        for row in rows:
            failed += 1
            rule_id = row.match.rule.id if row.match else None
            if row.match is not None and rule_id not in first:
                first[rule_id] = row.match  # type: ignore[index]
            sample = _sample(row)
            g = groups.get(rule_id)
            if g is None:
                groups[rule_id] = {"count": 1, "sample": sample}
            else:
                g["count"] += 1
    if reader is not None:
        budget.read = reader.bytes_read
        budget.reached = reader.budget_reached
        encoding = reader.encoding
    findings, out_groups = rules.tally(groups, first, lang)
    return {
        "encoding": encoding,
        "messages": messages,
        "bounces": bounces,
        "failed_recipients": failed,
        "bytes_read": budget.read,
        "truncated": budget.reached,
        "messages_cut": budget.cut,
        "unreadable": budget.unreadable,
        "findings": findings,
        "groups": out_groups,
    }


def _sample(row: Row) -> str:
    r = row.recipient
    words = (r.diagnostic or r.text) if r else None
    if not words and row.match is not None:
        words = row.match.evidence
    text = " ".join((words or "").split())[:500]
    if r and r.address and not text.lstrip("<").startswith(r.address):
        return f"{r.address}: {text}" if text else r.address
    return text
