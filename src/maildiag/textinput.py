"""Input as people paste it: bytes from stdin, a file or an argument, decoded and bounded.

Contract
--------
``detect_encoding(sample)`` names the codec of a byte string: a byte-order mark, UTF-16 without
one (its NUL bytes at every other position), UTF-8, else charset-normalizer's best guess among the
8-bit encodings Russian and Western mail logs are written in (cp1251, KOI8-R, cp866, ISO 8859-5,
Mac Cyrillic, cp1252). charset-normalizer is imported only for input that is not UTF-8.

``read_argument(text)`` decodes an argument that reached Python undecodable (the OS hands bytes
that are not UTF-8 over as surrogate escapes); ``read_stream(binary)`` reads stdin up to
``MAX_INPUT`` bytes. Both return a ``Decoded`` (the text, the codec used, whether the input was
cut).

``LineReader(binary)`` iterates the lines of a file in bounded memory: ``CHUNK`` bytes at a time,
decoded incrementally, each line cut to ``max_line`` characters while it is read (the rest of a
longer line is skipped, not stored), and no more than ``budget`` bytes read in all. Afterwards
its ``encoding``, ``bytes_read``, ``lines_cut`` and ``budget_reached`` say what happened, so the
output can say what was cut. ``/dev/zero`` ends at the budget; a 200 MB line costs one chunk.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

__all__ = [
    "CHUNK",
    "FILE_BUDGET",
    "MAX_INPUT",
    "Decoded",
    "LineReader",
    "decode",
    "detect_encoding",
    "read_argument",
    "read_stream",
]

MAX_INPUT = 1 << 20  # bytes of TEXT or stdin we read
FILE_BUDGET = 1 << 30  # bytes of a --file (or of all files of a maildir) we read: 1 GiB
CHUNK = 1 << 20  # bytes read at a time
SNIFF = 64 * 1024  # bytes an encoding is detected on
# What charset-normalizer may choose from: a short list keeps short Russian texts from being
# read as Shift-JIS or Big5 (it does that with KOI8-R lines of a few words).
EIGHT_BIT = ("cp1251", "koi8_r", "cp866", "iso8859_5", "mac_cyrillic", "cp1252")


class Decoded(NamedTuple):  # (a NamedTuple: dataclasses cost explain's cold start 10 ms)
    text: str
    encoding: str  # the codec's canonical name ("utf-8", "cp1251", "koi8-r", "utf-16-le" ...)
    truncated: bool = False  # the input was longer than we read


def _canonical(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def detect_encoding(sample: bytes) -> str:
    """The codec a byte string is written in (a canonical Python codec name)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = sample[:4096]
    if b"\x00" in head and len(head) >= 4:
        # UTF-16 without a BOM: ASCII characters leave a NUL at every other byte (and only there)
        even = head[0::2].count(0) / len(head[0::2])
        odd = head[1::2].count(0) / len(head[1::2])
        if odd > 0.3 and even < 0.05:
            return "utf-16-le"
        if even > 0.3 and odd < 0.05:
            return "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(sample[:SNIFF], final=False)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    from charset_normalizer import from_bytes  # only input that is not UTF-8 pays for it

    best = from_bytes(sample[:SNIFF], cp_isolation=list(EIGHT_BIT)).best()
    if best is None or not best.encoding:
        return "utf-8"  # nothing fits: keep what we can, the rest reads as U+FFFD
    return _canonical(best.encoding)


def _shown(encoding: str, data: bytes) -> str:
    """The name to report: a BOM's byte order spelled out, the BOM variant of UTF-8 as UTF-8."""
    if encoding == "utf-8-sig":
        return "utf-8"
    if encoding in ("utf-16", "utf-32"):
        return encoding + ("-le" if data[:2] == codecs.BOM_UTF16_LE else "-be")
    return encoding


def decode(data: bytes, truncated: bool = False) -> Decoded:
    """Bytes decoded with the codec they appear to be written in (bad bytes read as U+FFFD)."""
    encoding = detect_encoding(data)
    text = data.decode(encoding, "replace")
    encoding = _shown(encoding, data)
    if truncated and text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")  # a character cut in half at the limit
    return Decoded(text, encoding, truncated)


def read_argument(text: str) -> Decoded:
    """An argument as the user meant it: one the OS could not decode as UTF-8 arrives with
    surrogate escapes; its original bytes are decoded again with the codec they fit."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        return decode(os.fsencode(text))
    return Decoded(text, "utf-8")


def read_stream(stream: BinaryIO, limit: int = MAX_INPUT) -> Decoded:
    """Up to ``limit`` bytes of a stream (stdin), decoded; ``truncated`` when there was more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    truncated = len(data) > limit
    return decode(data[:limit], truncated)


class LineReader:
    """The lines of a binary stream, each cut to ``max_line`` characters, within ``budget``."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        max_line: int,
        budget: int = FILE_BUDGET,
        chunk: int = CHUNK,
    ) -> None:
        self.stream = stream
        self.max_line = max_line
        self.budget = budget
        self.chunk = chunk
        self.encoding = "utf-8"
        self.bytes_read = 0
        self.lines_cut = 0
        self.budget_reached = False
        self._head = b""
        self._codec = "utf-8"
        self._carry = ""
        self._over = False

    def peek(self) -> bytes:
        """The first chunk (read once, then served again by the iteration); it also decides
        the encoding of the whole stream."""
        if not self._head and not self.bytes_read:
            self._head = self._read()
            self._codec = detect_encoding(self._head) if self._head else "utf-8"
            self.encoding = _shown(self._codec, self._head)
        return self._head

    def head_text(self, size: int = SNIFF) -> str:
        """The start of the stream, decoded (for a guess at its language)."""
        return self.peek()[:size].decode(self._codec, "replace")

    def _read(self) -> bytes:
        room = self.budget - self.bytes_read
        if room <= 0:
            # one byte more tells a file that ends exactly at the budget from a longer one
            self.budget_reached = bool(self.stream.read(1))
            return b""
        data = self.stream.read(min(self.chunk, room))
        self.bytes_read += len(data)
        return data

    def __iter__(self) -> Iterator[str]:
        first = self.peek()
        self._head = b""
        if not first:
            return
        decoder = codecs.getincrementaldecoder(self._codec)("replace")
        # where a newline is the byte 0x0A, the rest of an over-long line is skipped undecoded
        skip_raw = not self._codec.startswith(("utf-16", "utf-32"))
        self._carry = ""  # the unfinished line (at most ``max_line`` characters)
        self._over = False  # the unfinished line is longer than ``max_line``: its rest is skipped
        data = first
        while data:
            if self._over and skip_raw:
                nl = data.find(b"\n")
                if nl < 0:
                    data = self._read()
                    continue
                self.lines_cut += 1
                yield self._carry.rstrip("\r")
                self._carry, self._over = "", False
                decoder.reset()
                data = data[nl + 1 :]
                if not data:
                    data = self._read()
                    continue
            yield from self._lines(decoder.decode(data))
            data = self._read()
        yield from self._lines(decoder.decode(b"", final=True))
        if self._carry or self._over:
            if self._over:
                self.lines_cut += 1
            yield self._carry.rstrip("\r")

    def _lines(self, text: str) -> list[str]:
        """The lines a decoded piece of the stream completes; the rest waits in ``_carry``."""
        limit = self.max_line
        pieces = text.split("\n")
        last = pieces.pop()
        out = []
        for n, piece in enumerate(pieces):
            if n == 0 and (self._carry or self._over):
                # the end of the line an earlier piece began
                line = self._carry if self._over else self._carry + piece
                if self._over or len(line) > limit:
                    line = line[:limit]
                    self.lines_cut += 1
                self._carry, self._over = "", False
            elif len(piece) > limit:
                line = piece[:limit]
                self.lines_cut += 1
            else:
                line = piece
            out.append(line.rstrip("\r"))
        if not self._over:
            if len(self._carry) + len(last) > limit:
                self._carry = (self._carry + last)[:limit]
                self._over = True
            else:
                self._carry += last
        return out
