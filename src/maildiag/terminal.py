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

This module is on ``explain``'s cold-start path: the standard library's ``re`` only.
"""

from __future__ import annotations

import os
import re
import sys

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


def encoding_problem(exc: UnicodeEncodeError) -> str:
    """One line for output that the terminal's encoding cannot carry (PYTHONIOENCODING=ascii)."""
    encoding = getattr(sys.stdout, "encoding", None) or exc.encoding
    return (
        f"the output cannot be written in this terminal's encoding ({encoding}): "
        "set a UTF-8 locale or PYTHONIOENCODING=utf-8"
    )
