"""Text that is safe to show on a terminal, and output to a pipe that closed early.

A server's reply, a pasted error text or a log line may carry bytes that a terminal obeys rather
than shows: ESC sequences (colours, cursor moves, a new window title), BEL, and the Unicode
format characters that reorder or hide text — bidi overrides and isolates (U+202A..U+202E,
U+2066..U+2069, U+061C), zero-width and direction marks (U+200B..U+200F, U+2060..U+2064,
U+FEFF) and the like, which can make a line read differently from what it says. ``safe()``
writes each of them as an escape (``\\x1b``, ``\\u202e``); every text renderer of a report
(text, Nagios, JUnit) and ``explain``'s text output passes what it prints through it.
``printable()`` is the stricter form the protocol transcripts use: everything that is not a
printable character, tab and no-break space included.

Any console, any redirect: ``tolerate()`` makes stdout and stderr write what their encoding
cannot carry (cp1251 or cp866 on Windows, ASCII) as a plain equivalent instead of failing —
``✔`` becomes ``OK``, ``→`` ``->``, ``«`` ``"``, a Cyrillic letter on an ASCII console its Latin
transliteration, anything else an escape (``\\u2603``); what the encoding carries stays as it
is. ``unicode_ok()`` tells a renderer whether it may use its symbols at all, and machine formats
ask it to choose an escaped form (JSON ``\\u`` escapes, XML and HTML character references).

This module is on ``explain``'s cold-start path: the standard library's ``re`` and ``codecs``.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
import unicodedata
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls, and the invisible or reordering format
# characters (Unicode category Cf, plus the line and paragraph separators and the Hangul fillers
# that render as blanks).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def safe(text: str) -> str:
    """``text`` with every character a terminal would obey or hide written as an escape;
    tab and newline stay."""
    if text.isascii() and text.isprintable():
        return text
    return _UNSAFE.sub(lambda m: _escape(m.group()), text)


def printable(text: str) -> str:
    """Every non-printable character escaped (tab, no-break space, ESC ...): transcripts."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def one_line(text: str) -> str:
    """``safe()`` on one line: runs of whitespace (CR, LF and tab included) become one space."""
    return safe(" ".join(text.split()))


def quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): send the rest of the output nowhere, so the
    interpreter's last flush raises nothing and the exit code stays the run's own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's StringIO): nothing will flush to a closed pipe


# Plain equivalents of the symbols maildiag's words and reports use, for an encoding that lacks
# them; "" for a mark that only decorates.
SYMBOLS = {
    "\u2714": "OK",  # ✔
    "\u2713": "OK",  # ✓
    "\u2716": "X",  # ✖
    "\u2717": "X",  # ✗
    "\u2192": "->",  # →
    "\u2190": "<-",  # ←
    "\u21d2": "=>",  # ⇒
    "\u2026": "...",  # …
    "\u2013": "-",  # –
    "\u2014": "-",  # —
    "\u2012": "-",
    "\u2212": "-",  # minus sign
    "\u00ab": '"',  # «
    "\u00bb": '"',  # »
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u2022": "*",  # •
    "\u00b7": "*",
    "\u2116": "No.",  # №
    "\u00a0": " ",  # no-break space
    "\u202f": " ",
    "\u2009": " ",
    "\u2248": "~",  # ≈
    "\u00d7": "x",  # ×
    "\u2265": ">=",
    "\u2264": "<=",
    "\u2500": "-",  # ─ (box drawing)
    "\u2502": "|",
    "\u00a9": "(c)",
}
# Russian letters for a console without Cyrillic (ASCII, Latin-1): a plain transliteration.
_LATIN = "a b v g d e yo zh z i y k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya"
_CYRILLIC = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", _LATIN.split(" "), strict=True))


def _plain(char: str, encoding: str) -> str:
    """The first of a character's plain equivalents that ``encoding`` carries."""
    lower = char.lower()
    candidates = []
    if char in SYMBOLS:
        candidates.append(SYMBOLS[char])
    if lower in _CYRILLIC:
        latin = _CYRILLIC[lower].replace("_", "")
        candidates.append(latin.capitalize() if char != lower else latin)
    # é -> e, ﬁ -> fi: the letters without their marks, compatibility forms spelled out
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
    )
    if stripped and stripped != char:
        candidates.append(stripped)
    for candidate in candidates:
        try:
            candidate.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            continue
        return candidate
    return _escape(char)


def _fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    return "".join(_plain(c, exc.encoding) for c in text), exc.end


ERRORS = "maildiag-plain"
codecs.register_error(ERRORS, _fallback)


def tolerate(*streams: Any) -> None:
    """Make each text stream write what its encoding cannot carry as a plain equivalent
    (``SYMBOLS``, a transliteration, an escape) instead of raising UnicodeEncodeError."""
    for stream in streams:
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue  # a StringIO (tests): it carries everything
        try:
            reconfigure(errors=ERRORS)
        except (ValueError, OSError, AttributeError):
            pass


def encoding_of(stream: Any = None) -> str:
    """The codec name of a stream's encoding (``utf-8``, ``cp1251`` ...); utf-8 when unknown."""
    stream = sys.stdout if stream is None else stream
    name = getattr(stream, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def unicode_ok(stream: Any = None) -> bool:
    """Whether the stream carries every character (a UTF encoding)."""
    return encoding_of(stream).startswith("utf")


def carries(text: str, stream: Any = None) -> bool:
    """Whether the stream's encoding carries ``text`` as it is."""
    try:
        text.encode(encoding_of(stream))
    except UnicodeEncodeError:
        return False
    return True


def markup_for(text: str, stream: Any = None) -> str:
    """XML or HTML for the stream: characters its encoding lacks as character references
    (``&#1087;``), which every XML and HTML reader decodes back, so the document is intact in
    cp1251, cp866 or ASCII as well as in UTF-8."""
    if unicode_ok(stream):
        return text
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")
