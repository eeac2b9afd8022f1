"""Is a pasted text a whole message? A test cheap enough for every ``explain`` call.

``looks_like_email(text)``: the text's first lines up to a blank line are all header fields
(``Name: value``, folded lines allowed, an mbox "From " line first allowed) and two of them are
fields a message or a delivery report has; or it holds the fields of an RFC 3464 report. Plain
string operations only: this module is imported on explain's cold path, where compiling a
regular expression costs more than the whole test.
"""

from __future__ import annotations

__all__ = ["looks_like_email"]

# Field names that a message's header (or a report) has and an arbitrary text rarely starts with.
MESSAGE_FIELDS = frozenset(
    {
        "return-path",
        "received",
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "delivered-to",
        "x-original-to",
        "auto-submitted",
        "reporting-mta",
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "diagnostic-code",
        "remote-mta",
        "arrival-date",
        "dkim-signature",
        "authentication-results",
        "x-failed-recipients",
        "reply-to",
        "sender",
        "in-reply-to",
        "references",
    }
)
REPORT_FIELDS = ("final-recipient:", "diagnostic-code:", "reporting-mta:")
MAX_HEAD = 16000  # characters of a text looked at
MAX_HEADER_LINES = 200


def _field_name(line: str) -> str | None:
    """The field name of a header line (RFC 5322: printable characters but the colon, no
    space), or None when the line is not one."""
    colon = line.find(":", 0, 77)
    if colon < 1:
        return None
    name = line[:colon]
    if not name.isascii() or not name.isprintable() or " " in name or "\t" in name:
        return None
    return name


def looks_like_email(text: str) -> bool:
    """Whether a text is a whole message (or the fields of a delivery report)."""
    if "\n" not in text:
        return False
    head = text.lstrip()[:MAX_HEAD].replace("\r\n", "\n")
    if head.startswith("From ") and "\n" in head:  # an mbox "From " line
        head = head.split("\n", 1)[1]
    lowered = head.lower()
    if "status:" in lowered and any(f in lowered for f in REPORT_FIELDS):
        return True
    known = 0
    for line in head.split("\n", MAX_HEADER_LINES)[:MAX_HEADER_LINES]:
        if not line.strip():
            break
        if line[0] in " \t":
            continue  # a folded continuation
        name = _field_name(line)
        if name is None:
            return False
        if name.lower() in MESSAGE_FIELDS:
            known += 1
    return known >= 2
