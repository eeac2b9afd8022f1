"""The text rules look at: normalisation, reply codes, and template rendering."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from maildiag.rulebase.base import _OPTIONAL_RE, _PARAM_RE, MAX_TEXT

# --------------------------------------------------------------------------- text helpers

_ESCAPED_NL = re.compile(r"\\r\\n|\\n|\\r")
# "535-5.7.8 text" or "535 5.7.8 text": one line of an SMTP reply
_REPLY_LINE = re.compile(r"([2-5][0-9][0-9])([ -])(?:([245]\.[0-7]\.[0-9]{1,3}) )?")
# (the look-behinds come after the first digit, so the engine can skip to candidate digits fast)
_ENHANCED = re.compile(r"([245])(?<![0-9.][245])\.([0-7])\.([0-9]{1,3})(?![0-9]|\.[0-9])")
_BASIC = re.compile(r"([245][0-5][0-9])(?<![\w.\-/:#=][245][0-5][0-9])(?=[ \t\-,;)'\"\]]|$)", re.M)
_NOT_A_CODE_BEFORE = re.compile(r"(?:line|port|errno|pid|id|version|v)\s{0,2}\Z", re.I)
# _BASIC with _NOT_A_CODE_BEFORE folded in as look-behinds (one search instead of a loop):
# "line 550", "port 465", "errno  421" are not reply codes
_NOT_A_CODE_WORDS = ("line", "port", "errno", "pid", "id", "version", "v")
_BASIC_CODE = re.compile(
    r"([245][0-5][0-9])(?<![\w.\-/:#=][245][0-5][0-9])"
    + "".join(
        f"(?<!(?i:{w}){sp}[245][0-5][0-9])"
        for w in _NOT_A_CODE_WORDS
        for sp in ("", r"\s", r"\s\s")
    )
    + r"(?=[ \t\-,;)'\"\]]|$)",
    re.M,
)


# the start of base64 JSON ('{"' is "eyJ"): maybe an OAuth2 error challenge (maildiag.oauth2)
_CHALLENGE_HINT = re.compile(r"(?<![A-Za-z0-9+/=])ey[IJA][A-Za-z0-9+/]{8}")


def normalize_text(text: str) -> str:
    """The text rules look at: escaped newlines undone, SMTP continuation lines joined, an OAuth2
    error challenge (base64 JSON) decoded, capped.

    ``535-5.7.8 Username and Password not accepted. Learn more at\\n535 5.7.8 https://...`` reads
    ``535 5.7.8 Username and Password not accepted. Learn more at https://...``;
    ``334 eyJzdGF0dXMiOiI0MDEifQ==`` reads ``334 {"status":"401"}``.
    """
    if len(text) > MAX_TEXT:
        half = MAX_TEXT // 2
        text = text[:half] + "\n" + text[-half:]
    if "ey" in text and _CHALLENGE_HINT.search(text):
        from maildiag.oauth2 import decode_challenges

        text = decode_challenges(text)
    if "\\" in text:
        text = _ESCAPED_NL.sub("\n", text).replace("\\t", " ")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "ё" in text or "Ё" in text:  # Russian writes ё as е at will: rules see е only
        text = _fold_yo(text)
    if "\n" in text and ("-" in text or "." in text):
        text = _join_continuations(text)
    return text


def _fold_yo(text: str) -> str:
    return text.replace("ё", "е").replace("Ё", "Е")


def _join_continuations(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    prev_code: str | None = None
    prev_enh: str | None = None
    prev_cont = prev_cont_enh = joined = False
    for line in lines:
        stripped = line.lstrip()
        m = _REPLY_LINE.match(stripped)
        if m and out and prev_code == m.group(1) and prev_cont:
            # the same reply continues: keep only the words
            out[-1] = out[-1].rstrip() + " " + stripped[m.end() :].strip()
            prev_cont = m.group(2) == "-"
            joined = True
            continue
        if not m and prev_enh and out and stripped.startswith(prev_enh + " ") and prev_cont_enh:
            # smtplib's repr: b'5.7.8 Username ...\n5.7.8 https://...'
            out[-1] = out[-1].rstrip() + " " + stripped[len(prev_enh) :].strip()
            joined = True
            continue
        out.append(line)
        if m:
            prev_code, prev_cont, prev_enh = m.group(1), m.group(2) == "-", m.group(3)
            prev_cont_enh = False
        else:
            # smtplib and friends keep only the enhanced code on continuation lines
            e = _ENHANCED.search(stripped, 0, 200)
            prev_code, prev_cont = None, False
            prev_enh = e.group(0) if e else None
            prev_cont_enh = bool(e)
    return "\n".join(out) if joined else text


def extract_codes(text: str) -> tuple[str | None, str | None]:
    """The first SMTP basic reply code and the first enhanced status code in a text, if any."""
    m = _ENHANCED.search(text)
    b = _BASIC_CODE.search(text)
    return (b.group(1) if b else None), (m.group(0) if m else None)


def _render(template: str, params: Mapping[str, Any], defaults: Mapping[str, str]) -> str:
    """Quote ``{param}``s; an ``[[...]]`` segment vanishes when a param inside it is unknown."""

    def optional(m: re.Match[str]) -> str:
        inner = m.group(1)
        for name in _PARAM_RE.findall(inner):
            if params.get(name) in (None, ""):
                return ""
        return inner

    if "[[" in template:
        template = _OPTIONAL_RE.sub(optional, template)

    def param(m: re.Match[str]) -> str:
        value = params.get(m.group(1))
        if value in (None, ""):
            return defaults.get(m.group(1), "?")
        return str(value)

    if "{" in template:
        template = _PARAM_RE.sub(param, template)
    return re.sub(r"  +", " ", template).replace(" .", ".").strip()
