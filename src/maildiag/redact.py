"""Where a password can show up in text, and how it is masked with ``********``.

A server may echo what it received: the password as typed, upper-cased, percent-encoded,
escaped, base64-encoded, quoted, or split across the continuation lines of a reply. maildiag
masks the secret *before* anything escapes, quotes, cuts or formats a server's words, so no later
step can turn an echo into a form the mask no longer recognises. What is masked:

* on the wire, exactly what we sent that carries the secret: the transcript line of a
  ``PASS``, ``AUTH``, ``LOGIN`` or ``AUTHENTICATE`` shows ``********`` in its place (the caller
  passes that form as ``shown=``);
* in a server's reply received after the secret went out on that connection (``reply()``): the
  password and each form listed below wherever it stands as a word of its own, in any letter
  case, also when a reply's continuation lines split it; not inside a longer word
  (a password ``alice`` leaves ``alice@example.test`` alone) and not in the status at the start
  of a line (a password ``250`` leaves ``250 2.1.5 Ok`` alone);
* anywhere in what we print (``__call__``): the encoded forms only (base64, SASL PLAIN,
  CRAM-MD5, escaped and percent-encoded forms that differ from the password itself), which no
  honest text contains by accident.

The forms: the password; its upper- and lower-case; ``repr()``/``ascii()``/JSON escapes; the
transcript's ``\\xNN`` escape; percent-encoding (``quote``, ``quote_plus``); the IMAP quoted
string; base64 of the password (AUTH LOGIN), with and without padding; and what ``add()`` is
given: SASL PLAIN responses (``\\0login\\0password``, ``login\\0password``,
``login\\0login\\0password``) and the CRAM-MD5 response.

An OAuth2 access token (``--oauth2-token-env``) is a secret like a password, with one difference:
nothing honest contains a token by accident, so the token itself and every form of it are masked
anywhere in what we print, not only in what a server echoes. Its forms: those of a password
above, and the XOAUTH2 and OAUTHBEARER initial responses that carry it (``oauth2_forms``), each
raw (``user=...^Aauth=Bearer <token>^A^A``), as the transcript escapes it (``\\x01``), and in
base64 with and without padding.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from maildiag.terminal import printable, safe

MASK = "********"

# A form counts only as a word of its own: not glued to letters, digits or the characters of
# an address, a path or an encoding on either side ("alice" in "alice@example.test" stays).
# A full stop or hyphen after it ends the word only when no word character follows ("pw." at
# the end of a sentence is an echo, "pw.example" is not).
_BEFORE = r"(?<![\w@%+/\\])(?<!\w[.\-])"
_AFTER = r"(?![\w@%+/\\]|[.\-]\w)"

# The status that starts a server line — our transcript tag, an SMTP reply code and enhanced
# code, POP3 +OK/-ERR, an IMAP untagged or tagged status (our tags are M1, M2 ...) and a response
# code in brackets: protocol words, never an echo of the password.
_STATUS = re.compile(
    r"(?:[SC]: )?"
    r"(?:[2-5][0-9][0-9](?:[ -]|$)(?:[245]\.[0-9]{1,3}\.[0-9]{1,3}(?: |$))?"
    r"|[+-](?:OK|ERR)\b ?"
    r"|\+ ?"
    r"|\* (?:OK|NO|BAD|BYE|PREAUTH)\b ?"
    r"|\* "
    r"|M[0-9]{1,9} (?:OK|NO|BAD)\b ?)?"
    r"(?:\[[A-Z][A-Z0-9-]{0,40}\] ?)?",
    re.IGNORECASE,
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def echo_forms(password: str) -> list[str]:
    """Every way of writing ``password`` that a server echo or an escaping step may produce."""
    from urllib.parse import quote, quote_plus

    raw = password.encode("utf-8", "surrogateescape")
    b64 = _b64(raw)
    forms = [
        password,
        password.upper(),
        password.lower(),
        repr(password)[1:-1],
        ascii(password)[1:-1],
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
        printable(password),  # the transcript's escape
        safe(password),  # the reports' escape
        quote(raw, safe=""),
        quote(raw),
        quote_plus(raw),
        password.replace("\\", "\\\\").replace('"', '\\"'),  # the inside of an IMAP quoted string
        b64,
        b64.rstrip("="),
    ]
    return [f for f in dict.fromkeys(forms) if f]


def sasl_forms(*messages: str) -> list[str]:
    """Each SASL message as sent (raw), as the transcript escapes it, and in base64 with and
    without padding."""
    forms: list[str] = []
    for raw in messages:
        b64 = _b64(raw.encode("utf-8", "surrogateescape"))
        forms += [raw, printable(raw), b64, b64.rstrip("=")]
    return [f for f in dict.fromkeys(forms) if f]


def oauth2_forms(token: str, login: str, host: str, port: int) -> list[str]:
    """The initial responses of XOAUTH2 and OAUTHBEARER that carry ``token`` for ``login`` to
    ``host:port``, in every form ``sasl_forms`` lists."""
    from maildiag.oauth2 import oauthbearer_message, xoauth2_message

    return sasl_forms(xoauth2_message(login, token), oauthbearer_message(login, token, host, port))


class Redactor:
    """Masks one run's secret in every form above; thread-safe, shared by all sessions.

    ``password``: masked as an echo, and its encoded forms anywhere; ``token`` (an OAuth2 access
    token): masked anywhere in every form. A run has one of them.
    """

    __slots__ = ("_derived", "_echo", "_forms", "_lock", "_plain")

    def __init__(self, password: str | None, token: str | None = None) -> None:
        self._lock = threading.Lock()
        self._plain: frozenset[str] = frozenset()  # the password's own letters, case-folded
        self._forms: tuple[str, ...] = ()  # every form, longest first
        self._echo: re.Pattern[str] | None = None  # any form, as a word
        self._derived: re.Pattern[str] | None = None  # the encoded forms only, as a word
        if password:
            self._plain = frozenset({password.casefold(), password.upper().casefold()})
            self.add(*echo_forms(password))
        if token:
            self.add(*echo_forms(token))

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"

    def add(self, *forms: str) -> None:
        """More forms of the secret that went out (a SASL PLAIN or CRAM-MD5 response)."""
        with self._lock:
            merged = sorted({*self._forms, *(f for f in forms if f)}, key=lambda f: (-len(f), f))
            derived = [f for f in merged if f.casefold() not in self._plain]
            # replaced whole, so readers need no lock
            self._echo = _word_pattern(merged)
            self._derived = _word_pattern(derived)
            self._forms = tuple(merged)

    def __bool__(self) -> bool:
        return bool(self._forms)

    # -- anything we print ----------------------------------------------------------------
    def __call__(self, text: str) -> str:
        """``text`` with the encoded forms of the secret masked (see the module docstring)."""
        pattern = self._derived
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """``value`` with every string in it (dicts, lists, tuples) redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        return value

    # -- a server's words -----------------------------------------------------------------
    def reply(self, text: str) -> str:
        """A server's reply (one or more lines) with every form of the secret masked."""
        if self._echo is None or not text:
            return text
        return "\n".join(self.reply_lines(text.split("\n")))

    def reply_lines(self, lines: Sequence[str]) -> list[str]:
        """The lines of one reply, each masked, and an echo split across two lines masked too."""
        pattern = self._echo
        if pattern is None:
            return list(lines)
        starts = [_status_end(line) for line in lines]
        spans: list[list[tuple[int, int]]] = [
            [m.span() for m in pattern.finditer(line, start)]
            for line, start in zip(lines, starts, strict=True)
        ]
        if len(lines) > 1:
            for separator in ("", " "):
                _joined_spans(pattern, lines, starts, separator, spans)
        return [_mask(line, line_spans) for line, line_spans in zip(lines, spans, strict=True)]


def _word_pattern(forms: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = "|".join(re.escape(f) for f in forms)
    if not alternatives:
        return None
    return re.compile(f"{_BEFORE}(?:{alternatives}){_AFTER}", re.IGNORECASE)


def _status_end(line: str) -> int:
    m = _STATUS.match(line)
    return m.end() if m else 0


def _joined_spans(
    pattern: re.Pattern[str],
    lines: Sequence[str],
    starts: Sequence[int],
    separator: str,
    spans: list[list[tuple[int, int]]],
) -> None:
    """Matches in the lines' words read as one text: those that cross from one line to the next
    (a continuation line may cut a long reply in the middle of a word, or at a space)."""
    pieces: list[tuple[int, int, int]] = []  # (line index, offset in the joined text, start)
    joined = ""
    for i, (line, start) in enumerate(zip(lines, starts, strict=True)):
        if i:
            joined += separator
        pieces.append((i, len(joined), start))
        joined += line[start:]
    for m in pattern.finditer(joined):
        s, e = m.span()
        hit = [
            (i, max(s, off), min(e, off + len(lines[i]) - start))
            for i, off, start in pieces
            if off < e and s < off + len(lines[i]) - start
        ]
        if len(hit) < 2:
            continue  # inside one line: found there already
        for i, a, b in hit:
            off, start = pieces[i][1], pieces[i][2]
            spans[i].append((a - off + start, b - off + start))


def _mask(line: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return line
    out = []
    last = 0
    for s, e in sorted(spans):
        if s < last:  # overlapping: extend the previous mask
            last = max(last, e)
            continue
        out.append(line[last:s])
        out.append(MASK)
        last = e
    out.append(line[last:])
    return "".join(out)
