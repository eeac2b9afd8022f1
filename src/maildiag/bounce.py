"""Whole bounce messages: what to diagnose in a pasted "Undelivered Mail Returned to Sender".

Contract
--------
``looks_like_email(text)`` (from maildiag.sniff, cheap) tells whether a text is a whole message:
a header block at its start, or the fields of an RFC 3464 report. ``parse(data)`` reads one message
(``str`` or ``bytes``) with the standard library's ``email`` package and returns a ``Bounce``: per
recipient the facts of its RFC 3464 ``message/delivery-status`` block (Final-Recipient, Action,
Status, Diagnostic-Code, Remote-MTA), and the human-readable text of the report with the returned
message cut off. It returns None for a message that is no delivery report (nothing to diagnose).

What counts as evidence: the delivery-status fields of each recipient and the report's own
words. What does not: the bounce's headers (Received, Authentication-Results, Received-SPF,
DKIM-Signature, X-Spam-*, X-Virus-*, Subject ...), the per-message fields of the report
(Reporting-MTA, Received-From-MTA, Arrival-Date), and the returned message in any form: a
``message/rfc822``, ``text/rfc822-headers`` or ``message/partial`` part, or a copy inlined after
a vendor's marker line (Exim's "------ This is a copy of the message", qmail's "--- Below this
line is a copy of the message.", Gmail's "----- Original message -----", Exchange's "Original
message headers:", Sendmail V5's "----- Unsent message follows -----", Lotus Notes' "-------
Returned Message --------" ...), or a header block that starts with Received: or Return-Path:.

Vendor forms without a delivery-status part (qmail, Exim, Gmail, old Sendmail, Notes, Domino,
DragonFly, OpenSMTPD, Exchange's texts ...) are read from their human text: ``recipient_texts``
cuts it into one piece per recipient (the lines that follow an address line, with Exim's
"SMTP error from remote mail server after ...:" and the reply on its next line joined into one).

This module holds no natural-language advice; it only finds the words the rules will read.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from maildiag.sniff import looks_like_email

__all__ = [
    "Bounce",
    "Recipient",
    "cut_returned",
    "human_text",
    "join_exim",
    "looks_like_email",
    "parse",
    "recipient_texts",
]

MAX_PART = 256 * 1024  # characters of one human-readable part we read
MAX_PARTS = 200  # MIME parts of one message we look at
MAX_MULTIPARTS = 60  # nested or sibling multipart declarations: more is no bounce, and the
# email package's parser recurses once per level (thousands of levels end in RecursionError)
MAX_RECIPIENTS = 500  # per-recipient blocks of one report we read
MAX_FIELD = 4096  # characters of one delivery-status field

# A header line of a message: a field name and a colon (a space after it is usual, not required).
_HEADER_LINE = re.compile(r"[!-9;-~]{1,76}:")

# Lines after which the rest of a report is the returned message (each vendor's own words; see
# the module docstring). Matched against a stripped line, case-insensitively.
_RETURNED_MARKERS = re.compile(
    r"^(?:"
    r"-{2,}\s{0,4}(?:this is a copy of the message|below (?:this|the next) line is a copy"
    r"|original message|message header follows|unsent message follows|no message was collected"
    r"|original message follows|returned message|the header of the original message"
    r"|original mail as follows|original message headers|original message\b)"
    r"|-{3,}\s{0,2}original (?:message|mail info)"
    r"|original message headers:?\s{0,4}$"
    r"|original message follows\.?$"
    r"|message headers follow"
    r"|below is a copy of the original message"
    r"|the attachment contains the original mail headers"
    r"|original mail as follows:"
    r"|en-t[eê]tes de message d'origine"
    r"|intestazioni originali del messaggio"
    r"|(?:original message|original-message|message details):?\s{0,4}$"
    r"|content-type: (?:message/rfc822|text/rfc822-headers|message/partial)"
    r"|-{5,}\s{0,4}(?:message|original) (?:text|header)"
    r")",
    re.I,
)
# A returned message inlined without a marker: a blank line, then its header block.
_RETURNED_HEADERS = re.compile(
    r"\n[ \t]*\n(?=(?:return-path|received|dkim-signature|x-received|arc-seal):[ \t]"
    r"[^\n]{0,2000}\n(?:[ \t][^\n]{0,2000}\n){0,40}[!-9;-~]{1,76}:[ \t])",
    re.I,
)
# Boilerplate lines that say nothing of the failure (MIME preambles).
_PREAMBLE = re.compile(
    r"^(?:this is a mime[- ](?:encapsulated|formatted)|this is a multi-part message"
    r"|this is a multipart message|if you see this text it means)",
    re.I,
)
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,10}")
_FIELD = re.compile(r"^([A-Za-z][\w-]{0,60}):[ \t]{0,20}(.*)$")
# RFC 3464 fields (and the vendors' X- additions): facts of the report, read apart, never as
# the report's words (``Reporting-MTA: dns; host`` is no DNS failure)
_NOT_HUMAN_FIELDS = frozenset(
    {
        "reporting-mta",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
        "dsn-gateway",
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
        "x-postfix-queue-id",
        "x-postfix-sender",
        "x-actual-recipient",
        "x-display-name",
        "x-supplementary-info",
    }
)
_MIME_LINE = re.compile(r"^(?:content-[\w-]{1,40}:|mime-version:|--[\w'()+,./:=?-]{6,200}$)", re.I)
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes the email package kept undecoded
_TYPE_PREFIX = re.compile(r"^[A-Za-z][\w-]{0,20};\s{0,4}")
_ENHANCED_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
# HTML, read in linear time on any input: a tag ends at the next < or > (a > inside a quoted
# attribute ends it early, which costs a few stray characters of text)
_TAG = re.compile(r"<[^<>]{0,2000}>")
_BLOCK_TAG = re.compile(r"<(?:br|/?p|/?div|/?tr|/?li|/?h\d|/?table)\b[^<>]{0,500}>", re.I)
_HIDDEN_START = re.compile(r"<(script|style|head)\b", re.I)
# Sendmail's verdict on one recipient: "550 <a@b>... User unknown"
_VERDICT = re.compile(r"^(?:[245]\d\d[ -])?<([^<>\s@]{1,64}@[^<>\s]{1,255})>\.\.\. \S")
_TRANSCRIPT = re.compile(r"^(?:>>> |<<< |(?:\.\.\. )?while talking to )", re.I)
_SEPARATOR = re.compile(r"^(?:[-=*_#~]{4,}|[-=*]{2,} [^\n]{0,80} [-=*]{2,})$")
_SHARE_LINES = 15  # lines of a report one recipient's share may take
_SHARE_CHARS = 4000
# Exim: "SMTP error from remote mail server after RCPT TO:<x>:" and, on the next line, the
# host and its reply (also Exim's "host ... [ip]: 550 ..." continuation).
_EXIM_AFTER = re.compile(
    r"(SMTP error from remote (?:mail server|mailer) after [^\r\n]{0,500}?:?)[ \t]*\r?\n[ \t]{0,40}"
    r"(?=\S)",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a delivery report; a field the report does not give is None."""

    address: str | None
    action: str | None  # failed, delayed, delivered, relayed, expanded (RFC 3464 2.3.3)
    status: str | None  # the RFC 3463 code of the Status field
    diagnostic: str | None  # Diagnostic-Code, its type ("smtp;") dropped, unfolded
    remote_mta: str | None
    text: str = ""  # this recipient's share of the human-readable text, if it could be found

    @property
    def failed(self) -> bool:
        return (self.action or "failed").lower() in ("failed", "delayed")


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery report: its recipients, and the words a person reads (returned message cut)."""

    recipients: tuple[Recipient, ...]
    text: str  # the human-readable part(s), returned message and MIME preamble cut off
    dsn: bool  # a message/delivery-status part (or its fields) was found
    truncated: bool = False  # the report had more recipients than MAX_RECIPIENTS


# --------------------------------------------------------------------------- detection


# --------------------------------------------------------------------------- parsing


def parse(data: str | bytes) -> Bounce | None:
    """The delivery report in a message, or None when it holds none (or when the message is
    not one a mail server writes: thousands of nested MIME parts)."""
    import email
    import email.policy

    head = data[: MAX_PART * 16]
    probe = head.lower() if isinstance(head, str) else head.decode("latin-1").lower()
    if probe.count("multipart/") > MAX_MULTIPARTS:
        return None
    if isinstance(data, bytes):
        data = data.replace(b"\r\n", b"\n")
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
    else:
        data = data.replace("\r\n", "\n")
        if data.lstrip().startswith("From ") and "\n" in data:
            data = data.lstrip().split("\n", 1)[1]  # the mbox "From " line is no header
        msg = email.message_from_string(data.lstrip("\n"), policy=email.policy.compat32)
    blocks: list[list[tuple[str, str]]] = []
    texts: list[str] = []
    nested: list[object] = []
    text_fields: list[list[tuple[str, str]]] = []
    budget = [MAX_PARTS]
    _walk(msg, blocks, texts, top=True, nested=nested, text_fields=text_fields, budget=budget)
    human = "\n\n".join(t for t in texts if t.strip())
    if not blocks:
        blocks = text_fields  # DSN fields written into a text part (some gateways do that)
    if not blocks and any(f in msg for f in ("final-recipient", "diagnostic-code")):
        # only the report's fields were pasted: they parsed as a header block
        blocks = _fields_in_text(data if isinstance(data, str) else data.decode("utf-8", "replace"))
    if not blocks and nested:
        # the real report travels inside a message/rfc822 part (a wrapping gateway)
        inner_texts: list[str] = []
        _walk(nested[0], blocks, inner_texts, top=False, budget=budget)
        human = "\n\n".join(t for t in (human, *inner_texts) if t.strip())
    dsn = bool(blocks)
    recipients = [_recipient(b) for b in blocks if _is_recipient_block(b)]
    truncated = len(recipients) > MAX_RECIPIENTS
    recipients = recipients[:MAX_RECIPIENTS]
    if not recipients:
        recipients = [Recipient(a, None, None, None, None) for a in _addresses_in(human)]
    if not recipients and not human.strip():
        return None
    pieces = recipient_texts(human, [r.address for r in recipients if r.address])
    recipients = [
        dataclasses.replace(r, text=pieces[r.address]) if r.address and r.address in pieces else r
        for r in recipients
    ]
    return Bounce(tuple(recipients), human, dsn, truncated)


def _walk(
    part: object,
    blocks: list[list[tuple[str, str]]],
    texts: list[str],
    top: bool,
    nested: list[object] | None = None,
    text_fields: list[list[tuple[str, str]]] | None = None,
    budget: list[int] | None = None,
    depth: int = 0,
) -> None:
    from email.message import Message

    assert isinstance(part, Message)
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            return
    if depth > MAX_MULTIPARTS:
        return
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "text/rfc822-headers", "message/partial"):
        # the returned message: never evidence; but a report forwarded inside one (a gateway
        # that wraps the real report) is kept aside in case the outer one says nothing
        inner = part.get_payload()
        if nested is not None and isinstance(inner, list) and inner:
            sub = inner[0]
            if isinstance(sub, Message) and sub.get_content_type() == "multipart/report":
                nested.append(sub)
        return
    if ctype in ("message/feedback-report", "message/disposition-notification"):
        return
    if ctype == "message/delivery-status":
        _delivery_status(part, blocks)
        return
    payload = part.get_payload()
    if part.is_multipart() and isinstance(payload, list):
        subparts = payload
        if ctype == "multipart/alternative":
            plain = [
                p
                for p in subparts
                if isinstance(p, Message) and p.get_content_type() == "text/plain"
            ]
            subparts = plain[:1] or subparts[:1]
        for sub in subparts:
            _walk(sub, blocks, texts, False, nested, text_fields, budget, depth + 1)
        return
    if ctype.startswith("multipart/") and isinstance(payload, str):
        # a multipart whose boundary never appears (a broken report): read its body as text
        body = payload[:MAX_PART]
        blocks.extend(_fields_in_text(cut_returned(body)))
        texts.append(human_text(body))
        return
    if not ctype.startswith("text/") and not (top and ctype == "application/octet-stream"):
        return
    if not top and (part.get_filename() or "").lower().endswith((".eml", ".msg")):
        return
    body = _decoded(part)[:MAX_PART]
    if ctype == "text/html":
        body = _html_text(body)
    if not top and texts and _starts_with_headers(body):
        return  # a text part that is the returned message itself
    if text_fields is not None:
        text_fields.extend(_fields_in_text(cut_returned(body)))
    texts.append(human_text(body))


def _decoded(part: object) -> str:
    from email.message import Message

    assert isinstance(part, Message)
    charset = part.get_content_charset() or "utf-8"
    payload = part.get_payload()
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if isinstance(payload, str) and cte not in ("base64", "quoted-printable"):
        if payload.isascii():
            raw_ascii = payload.encode("ascii")  # 7bit text (ISO-2022-JP is 7bit too)
            try:
                return raw_ascii.decode(charset, "replace")
            except LookupError:
                return payload
        if not _SURROGATE.search(payload):
            return payload  # parsed from a str: already text, whatever the part claims
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return payload if isinstance(payload, str) else ""
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _delivery_status(part: object, blocks: list[list[tuple[str, str]]]) -> None:
    from email.message import Message

    assert isinstance(part, Message)
    payload = part.get_payload()
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append([(k, _unfold(str(v))) for k, v in block.items()])
        return
    # a part the package did not split (a transfer encoding, a broken layout): read its text
    blocks.extend(_fields_in_text(_decoded(part)))


def _fields_in_text(text: str) -> list[list[tuple[str, str]]]:
    """Blocks of ``Field: value`` lines (blank-line separated) that hold report fields."""
    if "recipient:" not in text.lower() and "diagnostic-code:" not in text.lower():
        return []
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, (value + " " + line.strip())[:MAX_FIELD])
            continue
        m = _FIELD.match(line.strip())
        if m:
            current.append((m.group(1), m.group(2).strip()[:MAX_FIELD]))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return [b for b in blocks if _is_recipient_block(b)]


def _unfold(value: str) -> str:
    return re.sub(r"\s*\n\s*", " ", value).strip()[:MAX_FIELD]


def _is_recipient_block(block: list[tuple[str, str]]) -> bool:
    names = {k.lower() for k, _ in block}
    return bool(names & {"final-recipient", "original-recipient"}) and bool(
        names & {"action", "status", "diagnostic-code"}
    )


def _recipient(block: list[tuple[str, str]]) -> Recipient:
    fields: dict[str, str] = {}
    for name, value in block:
        fields.setdefault(name.lower(), value)
    address = fields.get("final-recipient") or fields.get("original-recipient")
    if address:
        address = _TYPE_PREFIX.sub("", address).strip().strip("<>").strip() or None
    status = fields.get("status")
    if status:
        m = _ENHANCED_STATUS.search(status)
        status = m.group(0) if m else None
    diagnostic = fields.get("diagnostic-code")
    if diagnostic:
        diagnostic = _TYPE_PREFIX.sub("", diagnostic).strip() or None
    remote = fields.get("remote-mta")
    if remote:
        remote = _TYPE_PREFIX.sub("", remote).strip() or None
    action = (fields.get("action") or "").strip().lower() or None
    return Recipient(address, action, status, diagnostic, remote)


# --------------------------------------------------------------------------- human text


def cut_returned(text: str) -> str:
    """A report's words without the returned message that follows them (and its preamble)."""
    text = text.replace("\r\n", "\n")
    out: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped and _RETURNED_MARKERS.match(stripped):
            break
        if stripped and _PREAMBLE.match(stripped):
            continue
        out.append(line)
    kept = "\n".join(out)
    m = _RETURNED_HEADERS.search(kept)
    if m:
        kept = kept[: m.start()]
    return kept.strip("\n")


def human_text(text: str) -> str:
    """The words of a report a person reads: the returned message cut off, and neither the
    report's machine fields (Reporting-MTA, Final-Recipient, Status ...) nor MIME lines."""
    kept: list[str] = []
    skipping = False
    for line in cut_returned(text).split("\n"):
        if skipping and line[:1] in (" ", "\t") and line.strip():
            continue  # a folded continuation of a dropped field
        m = _FIELD.match(line)
        skipping = bool(m and m.group(1).lower() in _NOT_HUMAN_FIELDS)
        if skipping or _MIME_LINE.match(line):
            continue
        kept.append(line)
    return "\n".join(kept).strip("\n")


def _starts_with_headers(text: str) -> bool:
    lines = [ln for ln in text.lstrip().split("\n", 6)[:6] if ln.strip()]
    return len(lines) >= 2 and all(_HEADER_LINE.match(ln) or ln[0] in " \t" for ln in lines[:3])


def _html_text(html: str) -> str:
    import html as html_mod

    html = _BLOCK_TAG.sub("\n", _without_hidden(html))
    return html_mod.unescape(_TAG.sub(" ", html))


def _without_hidden(html: str) -> str:
    """HTML without its script, style and head elements (text nobody reads), in one pass."""
    out: list[str] = []
    low = html.lower()
    pos = 0
    while True:
        m = _HIDDEN_START.search(html, pos)
        if m is None:
            out.append(html[pos:])
            break
        out.append(html[pos : m.start()])
        end = low.find("</" + m.group(1).lower(), m.end())
        if end < 0:
            break  # never closed: the rest is hidden
        close = low.find(">", end)
        if close < 0:
            break
        pos = close + 1
    return " ".join(out)


def _addresses_in(text: str) -> list[str]:
    """Recipient addresses a text-only report names on lines of their own (qmail, Exim ...) or
    in Sendmail's verdict lines (``550 <a@b>... User unknown``)."""
    found: list[str] = []
    for line in text.split("\n"):
        v = _VERDICT.match(line.strip())
        if v:
            addr = v.group(1)
        else:
            s = line.strip().strip("<>:,;()").strip()
            m = _ADDRESS.match(s) if s else None
            if not m or not (m.group(0) == s or line.lstrip().startswith("<")):
                continue
            addr = m.group(0)
        if addr.lower() not in (a.lower() for a in found):
            found.append(addr)
    return found[:MAX_RECIPIENTS]


def join_exim(text: str) -> str:
    """Exim's "SMTP error from remote mail server after <command>:" and the reply on the next
    line, joined into one line."""
    return _EXIM_AFTER.sub(r"\1 ", text)


def recipient_texts(text: str, addresses: list[str]) -> dict[str, str]:
    """Each address's share of a human text, joined into one line.

    A share starts at a line that begins with the address (``<a@b>: host ... said:``,
    ``  a@b``, ``<a@b>... Deferred: ...``) and runs to the next such line of any address, a
    separator line (``-----``, ``*****``) or two blank lines, at most ``_SHARE_LINES`` lines; an
    address with several such lines gets them all. Exim's "SMTP error from remote mail server
    after RCPT TO:<a@b>:" and the reply on its next line read as one sentence.
    """
    if not addresses or not text:
        return {}
    lines = join_exim(text).split("\n")
    wanted = {a.lower(): a for a in reversed(addresses)}  # the first spelling of an address wins
    starts: list[tuple[int, str]] = []
    verdicts: set[int] = set()
    for n, line in enumerate(lines):
        stripped = line.strip()
        v = _VERDICT.match(stripped)
        if v:
            stripped = stripped[stripped.index("<") :]
        m = _ADDRESS.match(stripped.lstrip("<(\"'"))
        addr = wanted.get(m.group(0).lower()) if m else None
        if addr is not None:
            starts.append((n, addr))
            if v:
                verdicts.add(n)
    out: dict[str, list[str]] = {}
    for i, (n, addr) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(lines)
        # a Sendmail verdict line is a whole statement of its own, with the transcript of the
        # session just above it (">>> MAIL From:", "<<< 550 ..." after "While talking to ...")
        piece: list[str] = []
        if n in verdicts:
            end = n + 1
            k = n
            while k > 0 and n - k < _SHARE_LINES and _TRANSCRIPT.match(lines[k - 1].strip()):
                k -= 1
                if not lines[k].strip().startswith((">>>", "<<<")):
                    break  # the "While talking to" line starts the session
            piece = [ln.strip() for ln in lines[k:n]]
        else:
            end = min(end, n + _SHARE_LINES)
        blank = 0
        for line in lines[n:end]:
            stripped = line.strip()
            if piece and _SEPARATOR.match(stripped):
                break
            blank = blank + 1 if not stripped else 0
            if blank >= 2:
                break
            if stripped:
                piece.append(stripped)
        out.setdefault(addr, []).extend(piece)
    joined = {a: " ".join(p)[:_SHARE_CHARS] for a, p in out.items()}
    return {a: t for a, t in joined.items() if len(t) > len(a) + 8}
