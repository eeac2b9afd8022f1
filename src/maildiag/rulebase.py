"""The rule base: load, validate, cache, match and render the YAML rules in rules/.

Contract
--------
``RuleBase.load(extra_dirs)`` reads every top-level ``*.yaml`` of the built-in rules directory,
then of each ``MAILDIAG_RULES`` entry, then of each extra directory (later directories win: a rule
with the same id replaces the earlier one). rules/providers (the provider database) is not read.
Every problem in a file is a ``RuleBaseError`` whose text is one line naming the file and the rule.

``RuleBase.match(text, signal=..., protocol=..., provider=...)`` returns ``Match`` objects, best
first. ``RuleBase.finding(match, lang=..., params=...)`` renders one as a ``models.Finding``.

A rule file is a mapping with these top-level keys (all optional)::

    rules:          list of rules (schema below)
    params:         {name: {en: text, ru: text}}   default wording of a missing {param}
    ui:             {key: {en: text, ru: text}}     labels the explain command prints
    interception:   [{issuer: substring, product: name}]   TLS-inspection products
    provider_hints: {provider: [regex, ...]}          words that reveal who answered

A rule::

    id: yandex.smtp-auth-off          # [a-z0-9][a-z0-9._-]*, unique within a directory
    category: auth_required           # models.Category
    severity: fail                    # info | warn | fail
    priority: 0                       # optional tie-breaker, -9..9 (use sparingly)
    fallback: false                   # true: speaks only when no other text rule matched
    match:                            # every condition given must hold (AND); lists mean any-of
      text: [regex, ...]              # searched case-insensitively, ^/$ at line ends
      unless: [regex, ...]            # the rule does not apply when one of these matches
      code: ["535", "5xx"]            # SMTP basic reply code (x = any digit)
      enhanced: ["5.7.8", "5.7.*"]    # RFC 3463 enhanced status code (* = any)
      protocol: [smtp, imap, pop3]    # applies only to these (when the caller knows)
      provider: [yandex]              # applies only to this provider (when the caller knows)
      signal: [connect.refused]       # probe signals this rule explains (maildiag.signals)
    title: {en: ..., ru: ...}         # may quote {param}; [[ ... {param} ... ]] is dropped
    steps: {en: [...], ru: [...]}     #   when a param inside it is unknown
    links: [https://...]
    examples: [text | {text, signal, protocol, provider}]   # must match, as the best rule
    counterexamples: [same]                                  # must not match

Ranking, best first: explained by the signal asked for; priority; provider-specific (the caller
named the provider, or a provider hint such as ``gsmtp`` or ``yandex`` is in the text); matched by
text; enhanced code over basic code; the longer text match; a generic rule over a provider rule
(a provider rule whose provider is not known applies, but does not outrank the generic one).
Rules of equal rank come in the order their regexes first appear in the rule files (the same in
every process: it used to depend on string hashing).
Code-only rules (the RFC 3463 layer) are dropped by ``explain`` when any text rule matched.

Speed: regexes are compiled lazily, one by one, and only run when a literal every match of them
must contain (found at load time) is present in the text. Each literal is indexed by the first
four letters of a word it contains that starts at a word boundary; a text's words give the keys to
look up, and only those literals are checked (``in``) and only their regexes run. On ASCII text
(where lower-casing agrees with case-insensitive matching) every other literal set a regex needs
(``literal_sets``) is checked too before it runs: most regexes whose rarest word is present but
whose other words are not never run.
The validated rule data is cached as marshal in the user cache directory, keyed by the rule
files' paths, sizes and mtimes (and this module's), so a cold ``explain`` imports no yaml.
Regexes may not nest quantifiers nor use unbounded ``*``/``+``/``{n,}`` (write ``{0,80}``): with
the text capped at ``MAX_TEXT`` characters, matching stays linear in the worst case.
"""

from __future__ import annotations

import marshal
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from maildiag.lang import LANGS

if TYPE_CHECKING:
    from pathlib import Path

    from maildiag.models import Finding, Summary

__all__ = [
    "MAX_TEXT",
    "Match",
    "Rule",
    "RuleBase",
    "RuleBaseError",
    "builtin_rules_dir",
    "extract_codes",
    "normalize_text",
    "rule_dirs",
]

CACHE_FORMAT = 7  # bump when the cached structure or the literal extraction changes
MAX_TEXT = 16384  # characters of a text the matcher looks at: the head and the tail
MAX_REPEAT_BOUND = 1000  # the largest {m,n} a rule regex may use
# ways quantifiers in a row may split a text between them (regex_problem); the built-ins need 1708
MAX_BACKTRACK = 10_000
# seconds the regexes of user rules may take on one text, and in timeouts over a whole process
USER_REGEX_BUDGET = 0.5
USER_REGEX_TOTAL = 2.0
UNEXPLAINED = "unexplained"  # the catch-all signal the engine uses when nothing else matches
PROTOCOLS = ("smtp", "imap", "pop3")
SEVERITIES = ("info", "warn", "fail")
RE_FLAGS = re.IGNORECASE | re.MULTILINE

_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_NEVER = re.compile(r"(?!)")  # matches nothing
_CODE_RE = re.compile(r"[2-5][0-9x][0-9x]\Z")
_ENH_RE = re.compile(r"([245*])\.([0-9]{1,3}|\*)\.([0-9]{1,3}|\*)\Z")
_PARAM_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_OPTIONAL_RE = re.compile(r"\[\[(.*?)\]\]", re.S)
_LINK_RE = re.compile(r"https?://\S+\Z")

_RULE_KEYS = frozenset(
    {
        "id",
        "category",
        "severity",
        "priority",
        "fallback",
        "match",
        "title",
        "steps",
        "links",
        "examples",
        "counterexamples",
    }
)
_MATCH_KEYS = frozenset({"text", "unless", "code", "enhanced", "protocol", "provider", "signal"})
_EXAMPLE_KEYS = frozenset({"text", "signal", "protocol", "provider"})
_FILE_KEYS = frozenset({"rules", "params", "ui", "interception", "provider_hints"})
_INTERCEPTION_KEYS = frozenset({"issuer", "product"})


class RuleBaseError(Exception):
    """A rule base that cannot be used; ``str()`` is one line naming the file and the rule."""


# --------------------------------------------------------------------------- locations


def builtin_rules_dir() -> Path:
    """The shipped rules: ``maildiag/rules`` in a wheel, ``<repo>/rules`` in a source checkout."""
    from pathlib import Path

    return Path(_builtin_dir())


def _builtin_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(here, "rules")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(os.path.dirname(here)), "rules")


def _env_dirs() -> list[str]:
    value = os.environ.get("MAILDIAG_RULES", "")
    return [part for part in value.split(os.pathsep) if part.strip()]


def rule_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Directories in load order: the built-ins, then ``MAILDIAG_RULES`` entries, then ``extra``."""
    from pathlib import Path

    return [Path(d) for d in _dir_strings(extra)]


def _dir_strings(extra: Sequence[str | Path] = ()) -> list[str]:
    out = [_builtin_dir(), *_env_dirs(), *(os.fspath(e) for e in extra)]
    seen: set[str] = set()
    unique = []
    for d in out:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _yaml_files(directory: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the top-level YAML files of a directory, sorted by name."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        raise RuleBaseError(f"{directory}: rules directory not found") from None
    except NotADirectoryError:
        raise RuleBaseError(f"{directory}: not a directory") from None
    except OSError as exc:
        raise RuleBaseError(f"{directory}: cannot read rules directory ({exc.strerror})") from None
    files = []
    for entry in entries:
        if entry.name.endswith((".yaml", ".yml")) and not entry.name.startswith("."):
            try:
                st = entry.stat()
            except OSError as exc:
                raise RuleBaseError(f"{entry.path}: cannot read ({exc.strerror})") from None
            if entry.is_file():
                files.append((entry.path, st.st_size, st.st_mtime_ns))
    files.sort()
    return files


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


def normalize_text(text: str) -> str:
    """The text rules look at: escaped newlines undone, SMTP continuation lines joined, capped.

    ``535-5.7.8 Username and Password not accepted. Learn more at\\n535 5.7.8 https://...`` reads
    ``535 5.7.8 Username and Password not accepted. Learn more at https://...``.
    """
    if len(text) > MAX_TEXT:
        half = MAX_TEXT // 2
        text = text[:half] + "\n" + text[-half:]
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


# --------------------------------------------------------------------------- compiled rules


class Rule:
    """One validated rule (a read-only view of its data)."""

    __slots__ = (
        "id",
        "category",
        "severity",
        "priority",
        "fallback",
        "file",
        "text",
        "unless",
        "codes",
        "enhanced",
        "protocols",
        "providers",
        "signals",
        "title",
        "steps",
        "links",
        "examples",
        "counterexamples",
        "text_ids",
        "unless_ids",
        "code_only",
        "has_codes",
        "generic",
    )

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.id: str = d["id"]
        self.category: str = d["category"]
        self.severity: str = d["severity"]
        self.priority: int = d["priority"]
        self.fallback: bool = d["fallback"]
        self.file: str = d["file"]
        self.text: tuple[str, ...] = tuple(d["text"])
        self.unless: tuple[str, ...] = tuple(d["unless"])
        self.codes: tuple[str, ...] = tuple(d["code"])
        self.enhanced: tuple[str, ...] = tuple(d["enhanced"])
        self.protocols: frozenset[str] = frozenset(d["protocol"])
        self.providers: frozenset[str] = frozenset(d["provider"])
        self.signals: frozenset[str] = frozenset(d["signal"])
        self.title: dict[str, str] = d["title"]
        self.steps: dict[str, list[str]] = d["steps"]
        self.links: tuple[str, ...] = tuple(d["links"])
        self.examples: list[dict[str, Any]] = d["examples"]
        self.counterexamples: list[dict[str, Any]] = d["counterexamples"]
        self.text_ids: tuple[int, ...] = ()
        self.unless_ids: tuple[int, ...] = ()
        # the RFC 3463 / reply-class layer: rules matched by a code alone
        self.code_only = not self.text and not self.signals and bool(self.codes or self.enhanced)
        self.has_codes = bool(self.codes or self.enhanced)
        self.generic = int(not self.providers)  # the last element of a rank

    def __repr__(self) -> str:
        return f"Rule({self.id!r}, {self.category})"


class Match:
    """A rule that applies to a text or a signal, with why (``via``) and how well (``rank``)."""

    __slots__ = ("rule", "via", "rank", "_evidence", "_span", "_groups", "code")

    def __init__(
        self,
        rule: Rule,
        via: str,
        rank: tuple[int, ...],
        evidence: str | None,
        groups: dict[str, str] | re.Match[str] | None,
        code: str | None,
        span: tuple[str, int, int] | None = None,
    ) -> None:
        self.rule = rule
        self.via = via  # "signal", "text" or "code"
        self.rank = rank  # (signal, priority, provider known, text, code level, length, generic)
        self._evidence = evidence
        self._span = span  # (text, start, end): the evidence line is cut out only when asked
        self._groups = groups
        self.code = code  # the reply code found in the text (enhanced if any, else basic)

    @property
    def evidence(self) -> str:
        """The line of the text that matched (trimmed), or the text a signal came with."""
        if self._evidence is None:
            text, start, end = self._span or ("", 0, 0)
            self._evidence = _line_of(text, start, end) if text else ""
        return self._evidence

    @property
    def groups(self) -> dict[str, str]:
        """Named groups of the matching regex: values a title may quote."""
        g = self._groups
        if g is None:
            return {}
        if not isinstance(g, dict):
            g = self._groups = {k: v for k, v in g.groupdict().items() if v}
        return g

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def category(self) -> str:
        return self.rule.category

    @property
    def severity(self) -> str:
        return self.rule.severity

    def __repr__(self) -> str:
        return f"Match({self.rule.id!r}, via={self.via}, rank={self.rank})"


class RuleBase:
    """The loaded rules, with the prefilter index and the lazily compiled patterns."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.dirs: list[str] = data["dirs"]
        self.rules: list[Rule] = [Rule(d) for d in data["rules"]]
        self.params: dict[str, dict[str, str]] = data["params"]
        self.ui: dict[str, dict[str, str]] = data["ui"]
        self.interception: list[tuple[str, str]] = [tuple(x) for x in data["interception"]]
        self.from_cache: bool = data.get("from_cache", False)
        self._by_id = {r.id: r for r in self.rules}
        self._enums: dict[str, tuple[Any, Any, Any]] = {}
        self._rendered: dict[tuple[str, str, str | None], tuple[str, tuple[str, ...]]] = {}
        # patterns: one list for text and unless regexes, compiled on first use
        self._sources: list[str] = data["patterns"]
        self._compiled: list[re.Pattern[str] | None] = [None] * len(self._sources)
        # patterns only user rules use (--rules, MAILDIAG_RULES): matched with a time budget
        self._guarded: frozenset[int] = frozenset(data.get("guarded", ()))
        self._user_compiled: dict[int, Any] = {}
        self._cache_file: str | None = None  # where this rule base was read from, if cached
        self.timed_out: dict[int, str] = {}  # user regexes that ran out of time: index -> source
        self._spent = 0.0  # seconds those timeouts cost
        keys: list[list[list[str]] | None] = data["keys"]
        pattern_index = {src: i for i, src in enumerate(self._sources)}
        for r in self.rules:
            r.text_ids = tuple(pattern_index[p] for p in r.text)
            r.unless_ids = tuple(pattern_index[p] for p in r.unless)
        self._hint_ids: dict[int, str] = {
            pattern_index[src]: pid for pid, pats in data["hints"].items() for src in pats
        }
        self._hint_set = frozenset(self._hint_ids)
        self._text_rules: dict[int, list[Rule]] = {}
        for r in self.rules:
            for i in r.text_ids:
                self._text_rules.setdefault(i, []).append(r)
        # what to do when a text pattern's literal is present: the rules it matches for, and
        # the other literal sets it needs (checked on ASCII text before the regex runs)
        extra = data["extra"]
        # the keyword layer (``fallback: true``) is planned apart: its patterns run only when
        # no other text rule matched, as the reply-code layer does
        self._plan: dict[int, tuple[tuple[Rule, ...], tuple[tuple[str, ...], ...]]] = {}
        self._fallback_plan: dict[int, tuple[tuple[Rule, ...], tuple[tuple[str, ...], ...]]] = {}
        for i, rules in self._text_rules.items():
            sets = tuple(tuple(lits) for lits in extra[i])
            main = tuple(r for r in rules if not r.fallback)
            low = tuple(r for r in rules if r.fallback)
            if main:
                self._plan[i] = (main, sets)
            if low:
                self._fallback_plan[i] = (low, sets)
        # the prefilter index, of the patterns searched for every text (text rules' and provider
        # hints'; an ``unless`` regex runs only for a rule that matched): a literal several
        # patterns share is looked for once
        searched = self._text_rules.keys() | self._hint_ids.keys()
        self._always: list[int] = [i for i, k in enumerate(keys) if not k and i in searched]
        by_key: dict[str, dict[str, list[int]]] = {}
        by_lit: dict[str, list[int]] = {}
        for i, lits in enumerate(keys):
            if i not in searched:
                continue
            for lit, key in lits or ():
                if key:
                    by_key.setdefault(key, {}).setdefault(lit, []).append(i)
                else:
                    by_lit.setdefault(lit, []).append(i)
        self._prefixes: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
            key: tuple((lit, tuple(ids)) for lit, ids in lits.items())
            for key, lits in by_key.items()
        }
        self._prefix_keys = frozenset(self._prefixes)
        # every literal set an ``unless`` regex needs: on ASCII text a missing set vetoes nothing
        unless_ids = {i for r in self.rules for i in r.unless_ids}
        self._veto_sets: dict[int, tuple[tuple[str, ...], ...]] = {
            i: (tuple(lit for lit, _ in keys[i] or ()),) * bool(keys[i])
            + tuple(tuple(lits) for lits in extra[i])
            for i in unless_ids
        }
        self._fallback: tuple[tuple[str, tuple[int, ...]], ...] = tuple(
            (lit, tuple(ids)) for lit, ids in by_lit.items()
        )
        self._code_rules: dict[str, list[Rule]] = {}
        for r in self.rules:
            if r.code_only:
                for c in (*r.codes, *r.enhanced):
                    self._code_rules.setdefault(c, []).append(r)
        self._signal_rules: dict[str, list[Rule]] = {}
        for r in self.rules:
            for s in r.signals:
                self._signal_rules.setdefault(s, []).append(r)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, extra_dirs: Sequence[str | Path] = (), *, cache: bool = True) -> RuleBase:
        """Built-in rules, then ``MAILDIAG_RULES``, then ``extra_dirs``; raises RuleBaseError."""
        dirs = _dir_strings(extra_dirs)
        listing = [(d, _yaml_files(d)) for d in dirs]
        stamp = _stamp(listing)
        path = _cache_path(dirs) if cache else None
        if path is not None:
            data = _read_cache(path, stamp)
            if data is not None:
                data["from_cache"] = True
                try:
                    rb = cls(data)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                    _drop_cache(path)  # not what we write: rebuilt below, rewritten
                else:
                    rb._cache_file = path
                    return rb
        data = _load_fresh(listing)
        data["dirs"] = dirs
        if path is not None:
            _write_cache(path, stamp, data)
        return cls(data)

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    # ------------------------------------------------------------------ matching

    def _pattern(self, i: int) -> re.Pattern[str]:
        p = self._compiled[i]
        if p is None:
            src = self._sources[i]
            if self.from_cache and regex_problem(src) is not None:
                # the lint refuses what the cache holds: we never write that, so the file was
                # changed behind our back. This regex runs with a time budget from now on, and
                # the cache is rebuilt next time.
                self._guarded = self._guarded | {i}
                _drop_cache(self._cache_file)
                p = _NEVER
            else:
                p = re.compile(src, RE_FLAGS)
            self._compiled[i] = p
        return p

    def _search(self, i: int, text: str, budget: list[float]) -> Any:
        """Pattern ``i`` searched in ``text``; a user's regex within the text's time budget."""
        if i in self._guarded:
            return self._guarded_search(i, text, budget)
        return self._pattern(i).search(text)

    def _guarded_search(self, i: int, text: str, budget: list[float]) -> Any:
        """A regex from a user's rules directory, run by the ``regex`` engine with a timeout:
        what is left of ``USER_REGEX_BUDGET`` for this text (``budget`` holds its deadline once
        the first such regex ran). A regex that times out counts as not matching, and is not
        run again in this process; once ``USER_REGEX_TOTAL`` seconds went to timeouts, no user
        regex runs any more. A hostile rule costs a run at most those seconds."""
        if i in self.timed_out or self._spent >= USER_REGEX_TOTAL:
            return None
        now = time.monotonic()
        if not budget:
            budget.append(now + USER_REGEX_BUDGET)
        left = budget[0] - now
        if left <= 0:
            return None
        pattern = self._user_compiled.get(i)
        if pattern is None:
            import regex

            pattern = self._user_compiled[i] = regex.compile(
                self._sources[i], regex.IGNORECASE | regex.MULTILINE
            )
        try:
            return pattern.search(text, timeout=left)
        except TimeoutError:
            self.timed_out[i] = self._sources[i]
            self._spent += time.monotonic() - now
            return None

    def candidates(self, lowered: str) -> set[int]:
        """Ids of the patterns whose required literal occurs in the (lower-cased) text."""
        found = set(self._always)
        index = self._prefixes
        # (ASCII text: the same words, found faster without the Unicode tables)
        words = (_WORD_KEY_ASCII if lowered.isascii() else _WORD_KEY).findall(lowered)
        for key in self._prefix_keys.intersection(words):
            for lit, ids in index[key]:
                if lit in lowered:
                    found.update(ids)
        for lit, ids in self._fallback:
            if lit in lowered:
                found.update(ids)
        return found

    def match(
        self,
        text: str = "",
        *,
        signal: str | None = None,
        protocol: str | None = None,
        provider: str | None = None,
        codes_as_fallback: bool = False,
    ) -> list[Match]:
        """Rules that explain this text and/or signal, best first (possibly none).

        ``codes_as_fallback``: consult the reply-code layer only when no text rule matched
        (what ``explain`` shows; it saves the work of ranking code meanings nobody reads).
        """
        text = text or ""
        results: dict[str, Match] = {}
        protocol = protocol.lower() if protocol else None
        provider = provider.lower() if provider else None

        def applies(r: Rule) -> bool:
            if protocol and r.protocols and protocol not in r.protocols:
                return False
            return not (provider and r.providers and provider not in r.providers)

        norm = normalize_text(text) if text else ""
        if signal and signal != "reply":
            basic, enhanced = extract_codes(norm) if norm else (None, None)
            for r in self._signal_rules.get(signal, ()):
                if not applies(r) or _code_level(r, basic, enhanced) < 0:
                    continue
                if not self._vetoed(r, norm):
                    # the caller's provider or protocol named: that rule's advice fits better
                    named = bool(provider and provider in r.providers) or bool(
                        protocol and r.protocols
                    )
                    results[r.id] = Match(
                        r,
                        "signal",
                        (1, r.priority, int(named), 0, 0, 0, int(not r.providers)),
                        text.strip()[:500],
                        {},
                        None,
                    )
            return _sorted(results)
        if not norm or norm.isspace():
            return []
        basic, enhanced = extract_codes(norm)
        lowered = norm.lower()
        found = self.candidates(lowered)
        known: set[str] = {provider} if provider else set()
        budget: list[float] = []  # the deadline of the user regexes on this text, once set
        if not provider and not self._hint_set.isdisjoint(found):
            for i in self._hint_set & found:
                pid = self._hint_ids[i]
                if pid not in known and self._search(i, norm, budget):
                    known.add(pid)
        filtered = bool(protocol or provider)
        code = enhanced or basic
        vetoes: dict[int, bool] = {}  # "unless" patterns are shared: each runs once per text
        compiled = self._compiled
        guarded = self._guarded
        # the other literal sets say the same as the regex only where lower-casing is exact
        check_sets = norm.isascii()
        ascii_lower = lowered if check_sets else None
        # in pattern order: rules of equal rank come out in the same order in every process
        ordered = sorted(found)
        for plan in (self._plan, self._fallback_plan):
            if plan is self._fallback_plan and results:
                break  # a specific rule recognised the text: the keyword layer stays silent
            for i in ordered:
                step = plan.get(i)
                if step is None:
                    continue
                rules_here, sets = step
                if sets and check_sets:
                    for lits in sets:
                        for lit in lits:
                            if lit in lowered:
                                break
                        else:
                            break  # no literal of this set: the regex cannot match
                    else:
                        sets = ()
                    if sets:
                        continue
                if i in guarded:
                    m = self._guarded_search(i, norm, budget)
                else:
                    m = (compiled[i] or self._pattern(i)).search(norm)
                if m is None:
                    continue
                start, end = m.span()
                length = end - start
                groups = m if m.re.groupindex else None
                for r in rules_here:
                    prev = results.get(r.id)
                    if prev is not None and prev.rank[5] >= length:
                        continue
                    if filtered and not applies(r):
                        continue
                    level = _code_level(r, basic, enhanced) if r.has_codes else 0
                    if level < 0 or (
                        r.unless_ids and self._vetoed(r, norm, vetoes, ascii_lower, budget)
                    ):
                        continue
                    rank = (
                        0,
                        r.priority,
                        1 if r.providers and r.providers & known else 0,
                        1,
                        level,
                        length,
                        r.generic,
                    )
                    results[r.id] = Match(r, "text", rank, None, groups, code, (norm, start, end))
        if codes_as_fallback and results:
            return _sorted(results)

        def bonus(r: Rule) -> int:
            return int(bool(r.providers & known)) if r.providers else 0

        code_rules = self._code_rules
        for key, level, spec in _code_keys(basic, enhanced):
            for r in code_rules.get(key, ()):
                if r.id in results or not applies(r):
                    continue
                if (len(r.codes) + len(r.enhanced) > 1 and _code_level(r, basic, enhanced) < 0) or (
                    r.unless_ids and self._vetoed(r, norm, vetoes, ascii_lower, budget)
                ):
                    continue
                code = enhanced if level == 2 else basic
                start = norm.find(code) if code else -1
                span = (norm, start, start + len(code)) if code and start >= 0 else None
                rank = (0, r.priority, bonus(r), 0, level, spec, int(not r.providers))
                results[r.id] = Match(r, "code", rank, None if span else "", None, code, span)
        return _sorted(results)

    def _vetoed(
        self,
        r: Rule,
        norm: str,
        memo: dict[int, bool] | None = None,
        lowered: str | None = None,
        budget: list[float] | None = None,
    ) -> bool:
        """Whether an ``unless`` regex of ``r`` matches; ``memo`` shares results within a text,
        ``lowered`` (ASCII text only) lets a missing literal answer without the regex."""
        if not r.unless_ids:
            return False
        budget = [] if budget is None else budget
        if memo is None:
            return any(self._search(i, norm, budget) for i in r.unless_ids)
        for i in r.unless_ids:
            hit = memo.get(i)
            if hit is None:
                if lowered is not None and not all(
                    any(lit in lowered for lit in lits) for lits in self._veto_sets[i]
                ):
                    hit = False
                else:
                    hit = self._search(i, norm, budget) is not None
                memo[i] = hit
            if hit:
                return True
        return False

    # ------------------------------------------------------------------ rendering

    def finding(
        self,
        match: Match,
        *,
        lang: str,
        params: Mapping[str, Any] | None = None,
        check: str | None = None,
    ) -> Finding:
        """The finding a match means, in ``lang`` (en or ru; anything else reads en)."""
        rule = match.rule
        enums = self._enums.get(rule.id)
        if enums is None:
            from maildiag import models  # lazily: not on the cold path of explain --json

            enums = self._enums[rule.id] = (
                models.Category(rule.category),
                models.Severity(rule.severity),
                _finding_maker(models.Finding),
            )
        if not params and match._groups is None:
            title, steps = self._rendered.get((rule.id, lang, match.code)) or self._render_tuple(
                match, lang, None
            )
        else:
            title, steps = self._render_tuple(match, lang, params)
        return enums[2](  # type: ignore[no-any-return]
            rule.id, enums[0], enums[1], title, steps, check, match.evidence, rule.links
        )

    def render(
        self, match: Match, *, lang: str, params: Mapping[str, Any] | None = None
    ) -> tuple[str, list[str]]:
        """Title and steps of a match with its params quoted (no models import: fast path)."""
        title, steps = self._render_tuple(match, lang, params)
        return title, list(steps)

    def _render_tuple(
        self, match: Match, lang: str, params: Mapping[str, Any] | None
    ) -> tuple[str, tuple[str, ...]]:
        lang = lang if lang in LANGS else "en"
        cacheable = not params and match._groups is None
        if cacheable:
            key = (match.rule.id, lang, match.code)
            hit = self._rendered.get(key)
            if hit is not None:
                return hit
        values: dict[str, Any] = dict(match.groups)
        if params:
            words = self._word_params(params, lang)
            values.update({k: v for k, v in words.items() if v not in (None, "")})
        if match.code and "code" not in values:
            values["code"] = match.code
        defaults = {k: v.get(lang, v.get("en", "?")) for k, v in self.params.items()}
        rule = match.rule
        title = _render(rule.title[lang], values, defaults)
        steps = tuple(s for s in (_render(s, values, defaults) for s in rule.steps[lang]) if s)
        if cacheable and len(self._rendered) < 100_000:
            self._rendered[key] = (title, steps)
        return title, steps

    def ui_text(self, key: str, lang: str, **params: Any) -> str:
        """A label of the explain command's output, from the ``ui`` tables of the rule files."""
        entry = self.ui.get(key)
        if not entry:
            return key
        text = entry.get(lang) or entry.get("en") or key
        return _render(text, params, {}) if params else text

    def words(self, key: str, lang: str, **params: Any) -> str:
        """The ``ui`` text ``key`` in ``lang`` with ``params`` quoted verbatim.

        Before quoting: a param that is a ``Summary`` is rendered first (``summary.<key>``), a
        list of them is rendered and joined with "; "; a whole number ``X`` with a ``plural.X``
        entry ("day|days", "день|дня|дней") gets ``X_unit``, the unit word
        in the plural form the number takes. A server's words are not subject to the
        template's spacing and punctuation clean-up.
        """
        values = self._word_params(params, lang)
        verbatim: list[str] = []
        safe: dict[str, str] = {}
        for name, value in values.items():
            if value is None or value == "":
                safe[name] = ""
                continue
            safe[name] = f"\x00{len(verbatim)}\x00"
            verbatim.append(str(value))
        out = self.ui_text(key, lang, **safe) if safe else self.ui_text(key, lang)
        return _TOKEN.sub(lambda m: verbatim[int(m.group(1))], out) if verbatim else out

    def summary_text(self, summary: Summary, lang: str) -> str:
        """A check's summary in ``lang`` (``en`` is what JSON shows)."""
        return self.words("summary." + summary.key, lang, **summary.params)

    def _word_params(self, params: Mapping[str, Any], lang: str) -> dict[str, Any]:
        from maildiag.models import Summary

        out: dict[str, Any] = {}
        for name, value in params.items():
            if isinstance(value, Summary):
                value = self.summary_text(value, lang)
            elif isinstance(value, (list, tuple)) and all(isinstance(v, Summary) for v in value):
                value = "; ".join(t for t in (self.summary_text(v, lang) for v in value) if t)
            out[name] = value
        for name, value in list(out.items()):
            if isinstance(value, int) and not isinstance(value, bool):
                forms = self.ui.get("plural." + name)
                if forms:
                    out[name + "_unit"] = plural_form(value, forms.get(lang) or forms["en"])
        return out


_TOKEN = re.compile("\x00([0-9]+)\x00")


def plural_form(n: int, forms: str) -> str:
    """The form of a unit word for ``n``: "one|many" (English) or "one|few|many" (Russian)."""
    words = [w.strip() for w in forms.split("|")]
    n = abs(n)
    if len(words) >= 3:
        if n % 10 == 1 and n % 100 != 11:
            return words[0]
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return words[1]
        return words[2]
    return words[0] if n == 1 or len(words) == 1 else words[1]


_FINDING_FIELDS = ("rule", "category", "severity", "title", "steps", "check", "evidence", "links")


def _finding_maker(cls: Any) -> Any:
    """``cls(*fields)`` for ``models.Finding``, faster.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; its slot
    descriptors do the same for a fraction of the cost. Should Finding change shape (other
    fields, a ``__post_init__``, no slots), this is the class itself.
    """
    import dataclasses

    names = tuple(f.name for f in dataclasses.fields(cls))
    if names != _FINDING_FIELDS or hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        return cls
    s_rule, s_cat, s_sev, s_title, s_steps, s_check, s_evidence, s_links = (
        vars(cls)[n].__set__ for n in names
    )
    new = object.__new__

    def make(
        rule: str,
        category: Any,
        severity: Any,
        title: str,
        steps: tuple[str, ...],
        check: str | None,
        evidence: str,
        links: tuple[str, ...],
    ) -> Any:
        f = new(cls)
        s_rule(f, rule)
        s_cat(f, category)
        s_sev(f, severity)
        s_title(f, title)
        s_steps(f, steps)
        s_check(f, check)
        s_evidence(f, evidence)
        s_links(f, links)
        return f

    return make


def _rank(m: Match) -> tuple[int, ...]:
    return m.rank


def _sorted(results: dict[str, Match]) -> list[Match]:
    if len(results) < 2:
        return list(results.values())
    return sorted(results.values(), key=_rank, reverse=True)


def _line_of(text: str, start: int, end: int) -> str:
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", end)
    line = text[a : b if b >= 0 else len(text)].strip()
    if len(line) > 400:
        lo = max(0, start - a - 150)
        line = ("…" if lo else "") + line[lo : lo + 400] + "…"
    return line


def _code_keys(basic: str | None, enhanced: str | None) -> list[tuple[str, int, int]]:
    """(key, level, specificity) of the code-only rules a text's codes reach."""
    keys: list[tuple[str, int, int]] = []
    if enhanced:
        c, s, d = enhanced.split(".")
        n = len(d)
        keys += [
            (enhanced, 2, 2 + n),
            (f"*.{s}.{d}", 2, 1 + n),
            (f"{c}.{s}.*", 2, 2),
            (f"*.{s}.*", 2, 1),
            (f"{c}.*.*", 2, 1),
        ]
    if basic:
        keys += [
            (basic, 1, 3),
            (basic[:2] + "x", 1, 2),
            (basic[0] + "x" + basic[2], 1, 2),
            (basic[0] + "xx", 1, 1),
        ]
    return keys


def _code_level(r: Rule, basic: str | None, enhanced: str | None) -> int:
    """-1: the rule's code condition fails; 0: none given; 1: basic matched; 2: enhanced."""
    level = 0
    if r.enhanced:
        if not enhanced or not any(_enh_matches(p, enhanced) for p in r.enhanced):
            return -1
        level = 2
    if r.codes:
        if not basic or not any(_code_matches(p, basic) for p in r.codes):
            return -1
        level = max(level, 1)
    return level


def _code_matches(pattern: str, code: str) -> bool:
    return all(p in ("x", c) for p, c in zip(pattern, code, strict=True))


def _enh_matches(pattern: str, code: str) -> bool:
    return all(p in ("*", c) for p, c in zip(pattern.split("."), code.split("."), strict=True))


_WORD = re.compile(r"\w+")
_WORD_KEY = re.compile(r"(\w{1,4})\w*")  # the first four letters of each word (the index keys)
_WORD_KEY_ASCII = re.compile(r"(\w{1,4})\w*", re.ASCII)


def _word_keys(lit: str, starts_word: bool) -> list[str]:
    """Index keys a text containing ``lit`` is sure to have among its words' first 4 letters."""
    keys = []
    for m in _WORD.finditer(lit):
        if m.start() == 0 and not starts_word:
            continue  # the literal may begin in the middle of a word of the text
        tok = m.group()
        if len(tok) >= 4:
            keys.append(tok[:4])
        elif m.end() < len(lit):  # a short word that ends inside the literal is a whole word
            keys.append(tok)
    return keys


# --------------------------------------------------------------------------- cache


def _cache_dir() -> str | None:
    if os.environ.get("MAILDIAG_NO_CACHE"):
        return None
    base = os.environ.get("MAILDIAG_CACHE_DIR")
    if base:
        return base
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "maildiag")


def _cache_path(dirs: Sequence[str]) -> str | None:
    base = _cache_dir()
    if not base:
        return None
    import zlib

    key = "\0".join(os.path.abspath(d) for d in dirs)
    tag = f"{sys.implementation.cache_tag}-{zlib.crc32(key.encode('utf-8', 'replace')):08x}"
    return os.path.join(base, f"rules-{tag}.marshal")


def _own_directory(path: str, *, create: bool) -> bool:
    """Whether ``path`` is a directory only this user can change (created 0700 if missing).

    A cache directory another user owns or may write into (``/tmp``, a shared group directory)
    is refused: whoever can write there could plant a file for maildiag to read or a link for it
    to write through. Without such a directory maildiag runs without a cache.
    """
    import stat

    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except (OSError, ValueError):
            return False
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    getuid = getattr(os, "geteuid", None)
    if getuid is not None and st.st_uid != getuid():
        return False
    return stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


_MAX_CACHE = 64 * 1024 * 1024  # bytes: the built-in rules take about 0.5 MB


def _stamp(listing: Sequence[tuple[str, list[tuple[str, int, int]]]]) -> list[Any]:
    try:
        st = os.stat(__file__)
        me = [st.st_size, st.st_mtime_ns]
    except OSError:
        me = [0, 0]
    return [CACHE_FORMAT, sys.version, me, [[d, [list(f) for f in files]] for d, files in listing]]


def _read_cache(path: str, stamp: list[Any]) -> dict[str, Any] | None:
    """The cached data, or None on any doubt: a link, a FIFO or another non-regular file, a file
    of another user, too large, unreadable, another version, or a structure that is not the one
    ``_load_fresh`` writes. (The regexes are linted again as they are first compiled.)"""
    import stat

    if not _own_directory(os.path.dirname(path), create=False):
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        getuid = getattr(os, "geteuid", None)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_size > _MAX_CACHE
            or (getuid is not None and st.st_uid != getuid())
        ):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            blob = fh.read(_MAX_CACHE + 1)
        cached = marshal.loads(blob)
    except (OSError, ValueError, EOFError, TypeError, MemoryError, RecursionError):
        return None
    finally:
        os.close(fd)
    if not isinstance(cached, dict) or cached.get("stamp") != stamp:
        return None
    data = cached.get("data")
    return data if isinstance(data, dict) and _valid_data(data) else None


def _write_cache(path: str, stamp: list[Any], data: dict[str, Any]) -> None:
    """Best effort: a read-only, missing or shared cache directory just means no cache.

    The file is written under a fresh name (``mkstemp``: O_EXCL, mode 0600, in the cache
    directory itself) and renamed over the old one, so a reader never sees half a file and no
    planted link can redirect the write.
    """
    import tempfile

    directory = os.path.dirname(path)
    if not _own_directory(directory, create=True):
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".rules-", suffix=".tmp", dir=directory)
    except (OSError, ValueError):
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(marshal.dumps({"stamp": stamp, "data": data}))
        os.replace(tmp, path)
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _drop_cache(path: str | None) -> None:
    """Remove a cache file found wanting, so the next run rebuilds it."""
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def _is_list(value: Any, item: type) -> TypeGuard[list[Any]]:
    """A list whose items are all of type ``item`` (exactly: checked in C, it runs on every
    cached load)."""
    return type(value) is list and set(map(type, value)) <= {item}


def _is_texts(value: Any) -> bool:
    """A mapping of names to {en: text, ru: text}."""
    if type(value) is not dict or not set(map(type, value)) <= {str}:
        return False
    inner = list(value.values())
    if not set(map(type, inner)) <= {dict}:
        return False
    return all(set(map(type, v)) | set(map(type, v.values())) <= {str} for v in inner)


_RULE_FIELDS: dict[str, type] = {
    "id": str,
    "category": str,
    "severity": str,
    "file": str,
    "priority": int,
    "fallback": bool,
}
_RULE_LISTS = ("text", "unless", "code", "enhanced", "protocol", "provider", "signal", "links")


def _valid_rule_data(r: Any, patterns: frozenset[str]) -> bool:
    if type(r) is not dict:
        return False
    if not all(type(r.get(k)) is t for k, t in _RULE_FIELDS.items()):
        return False
    if r["severity"] not in SEVERITIES or not _ID_RE.match(r["id"]):
        return False
    if not all(_is_list(r.get(k), str) for k in _RULE_LISTS):
        return False
    if not patterns.issuperset(r["text"]) or not patterns.issuperset(r["unless"]):
        return False
    title, steps = r.get("title"), r.get("steps")
    if type(title) is not dict or not all(type(title.get(x)) is str for x in LANGS):
        return False
    if type(steps) is not dict or not all(_is_list(steps.get(x), str) for x in LANGS):
        return False
    for k in ("examples", "counterexamples"):
        examples = r.get(k)
        if not _is_list(examples, dict):
            return False
        if not set(map(type, map(dict.get, examples, ["text"] * len(examples)))) <= {str}:
            return False
    return True


def _valid_data(data: dict[str, Any]) -> bool:
    """Whether cached data has the structure ``_load_fresh`` builds (else it is rebuilt)."""
    patterns = data.get("patterns")
    if not _is_list(patterns, str):
        return False
    n = len(patterns)
    keys, extra, guarded = data.get("keys"), data.get("extra"), data.get("guarded")
    if not (type(keys) is list and type(extra) is list and len(keys) == len(extra) == n):
        return False
    pairs = [pair for k in keys if k is not None for pair in (k if type(k) is list else [None])]
    if not set(map(type, keys)) <= {list, type(None)} or not _is_list(pairs, list):
        return False
    if not set(map(len, pairs)) <= {2} or not set(map(type, (x for p in pairs for x in p))) <= {
        str
    }:
        return False
    if not _is_list(extra, list) or not all(_is_list(e, list) for e in extra):
        return False
    if not set(map(type, (x for e in extra for sets in e for x in sets))) <= {str}:
        return False
    if not (_is_list(guarded, int) and all(0 <= i < n for i in guarded)):
        return False
    hints = data.get("hints")
    if type(hints) is not dict or not all(
        type(k) is str and _is_list(v, str) for k, v in hints.items()
    ):
        return False
    known = frozenset(patterns)
    if not all(known.issuperset(v) for v in hints.values()):
        return False
    if not (_is_texts(data.get("params")) and _is_texts(data.get("ui"))):
        return False
    interception = data.get("interception")
    if not (_is_list(interception, list) and all(_is_list(x, str) for x in interception)):
        return False
    rules = data.get("rules")
    return (
        type(rules) is list
        and _is_list(data.get("dirs"), str)
        and all(_valid_rule_data(r, known) for r in rules)
    )


# --------------------------------------------------------------------------- validation


def _yaml_load(path: str) -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                line = key_node.start_mark.line + 1
                raise RuleBaseError(f"{path}:{line}: a mapping key must be plain text")
            if key in out:
                line = key_node.start_mark.line + 1
                raise RuleBaseError(f"{path}:{line}: duplicate key {key!r}")
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RuleBaseError:
        raise
    except OSError as exc:
        raise RuleBaseError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RuleBaseError(f"{path}: not UTF-8 text") from None
    except RecursionError:  # the pure-Python loader (no libyaml) on a file nested thousands deep
        raise RuleBaseError(f"{path}: YAML error: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleBaseError(f"{path}{where}: YAML error: {problem}") from None


def _load_fresh(listing: Sequence[tuple[str, list[tuple[str, int, int]]]]) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    params: dict[str, dict[str, str]] = {}
    ui: dict[str, dict[str, str]] = {}
    interception: list[list[str]] = []
    hints: dict[str, list[str]] = {}
    memo: dict[Any, int] = {}  # regex_problem's character sets, worked out once per load
    vetted: set[str] = set()  # the regexes of the built-in rules: they ship tested
    builtin = os.path.abspath(_builtin_dir())
    for directory, files in listing:
        ours = os.path.abspath(directory) == builtin
        seen_here: dict[str, str] = {}
        for path, _size, _mtime in files:
            doc = _yaml_load(path)
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise RuleBaseError(f"{path}: a rule file is a mapping (rules:, params:, ui:)")
            unknown = set(doc) - _FILE_KEYS
            if unknown:
                first = sorted(map(str, unknown))[0]
                raise RuleBaseError(f"{path}: unknown top-level key {first!r}")
            for name, texts in (doc.get("params") or {}).items():
                params[str(name)] = _translations(texts, path, f"params.{name}")
            for name, texts in (doc.get("ui") or {}).items():
                ui[str(name)] = _translations(texts, path, f"ui.{name}")
            interception.extend(_interception(doc.get("interception"), path))
            for pid, pats in (doc.get("provider_hints") or {}).items():
                pats = _str_list(pats, path, f"provider_hints.{pid}", "patterns")
                for src in pats:
                    problem = regex_problem(src, memo)
                    if problem:
                        raise RuleBaseError(
                            f"{path}: provider_hints.{pid}: regex {src!r}: {problem}"
                        )
                hints.setdefault(str(pid).lower(), []).extend(pats)
                if ours:
                    vetted.update(pats)
            raw_rules = doc.get("rules") or []
            if not isinstance(raw_rules, list):
                raise RuleBaseError(f"{path}: 'rules' must be a list")
            for n, raw in enumerate(raw_rules, 1):
                rule = _validate_rule(raw, path, n, memo)
                if rule["id"] in seen_here:
                    raise RuleBaseError(
                        f"{path}: rule {rule['id']}: duplicate id (also in {seen_here[rule['id']]})"
                    )
                seen_here[rule["id"]] = path
                rules.pop(rule["id"], None)  # a later directory replaces: keep the newer order
                rules[rule["id"]] = rule
                if ours:
                    vetted.update(rule["text"])
                    vetted.update(rule["unless"])
    patterns: list[str] = []
    index: dict[str, int] = {}
    literals: list[list[tuple[str, bool]] | None] = []
    hint_sources = [src for pats in hints.values() for src in pats]
    for src in (*(x for r in rules.values() for x in (*r["text"], *r["unless"])), *hint_sources):
        if src not in index:
            index[src] = len(patterns)
            patterns.append(src)
            literals.append(required_literals(src))
    # how common each word prefix is in real texts (the examples): index by the rarest one
    freq: dict[str, int] = {}
    for rule in rules.values():
        for ex in rule["examples"]:
            for w in {w[:4] for w in _WORD.findall(ex["text"].lower())}:
                freq[w] = freq.get(w, 0) + 1
    keys: list[list[list[str]] | None] = []
    extra: list[list[list[str]]] = []
    for src, lits in zip(patterns, literals, strict=True):
        chosen_set = sorted({lit for lit, _ in lits or ()})
        extra.append([s for s in literal_sets(src) if s != chosen_set])
        if lits is None:
            keys.append(None)
            continue
        chosen = []
        for lit, starts_word in lits:
            options = _word_keys(lit, starts_word)
            best = min(options, key=lambda k: (freq.get(k, 0), -len(k), k)) if options else ""
            chosen.append([lit, best])
        keys.append(chosen)
    return {
        "rules": list(rules.values()),
        "params": params,
        "ui": ui,
        "interception": interception,
        "hints": hints,
        "patterns": patterns,
        "keys": keys,
        "extra": extra,
        "guarded": [i for i, src in enumerate(patterns) if src not in vetted],
    }


def _translations(value: Any, path: str, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RuleBaseError(f"{path}: {what}: expected a mapping with en and ru")
    extra = set(value) - set(LANGS)
    if extra:
        raise RuleBaseError(f"{path}: {what}: unknown language {sorted(map(str, extra))[0]!r}")
    for lang in LANGS:
        if not isinstance(value.get(lang), str) or not value[lang].strip():
            raise RuleBaseError(f"{path}: {what}: missing the {lang} translation")
    return {lang: value[lang].strip() for lang in LANGS}


def _interception(value: Any, path: str) -> list[list[str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RuleBaseError(f"{path}: 'interception' must be a list")
    out = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict) or set(item) != _INTERCEPTION_KEYS:
            raise RuleBaseError(f"{path}: interception entry {n}: needs exactly issuer and product")
        issuer, product = item["issuer"], item["product"]
        if not isinstance(issuer, str) or not issuer.strip() or not isinstance(product, str):
            raise RuleBaseError(f"{path}: interception entry {n}: issuer and product are text")
        out.append([issuer.strip(), product.strip()])
    return out


def _str_list(value: Any, path: str, rid: str, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        raise RuleBaseError(f"{path}: rule {rid}: {what} must be a list of strings")
    return [str(v) for v in value]


def _validate_rule(
    raw: Any, path: str, n: int, memo: dict[Any, int] | None = None
) -> dict[str, Any]:
    from maildiag.models import Category
    from maildiag.signals import SIGNALS

    if not isinstance(raw, dict):
        raise RuleBaseError(f"{path}: rule #{n}: expected a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise RuleBaseError(f"{path}: rule #{n}: missing or malformed id {rid!r}")

    def fail(msg: str) -> RuleBaseError:
        return RuleBaseError(f"{path}: rule {rid}: {msg}")

    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(map(str, unknown))[0]!r}")
    categories = {c.value for c in Category}
    if raw.get("category") not in categories:
        raise fail(f"unknown category {raw.get('category')!r}")
    if raw.get("severity") not in SEVERITIES:
        raise fail(f"severity must be one of {', '.join(SEVERITIES)}")
    fallback = raw.get("fallback", False)
    if not isinstance(fallback, bool):
        raise fail("fallback must be true or false")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not -9 <= priority <= 9:
        raise fail("priority must be an integer from -9 to 9")

    match = raw.get("match")
    if not isinstance(match, dict) or not match:
        raise fail("missing match conditions")
    unknown = set(match) - _MATCH_KEYS
    if unknown:
        raise fail(f"unknown match key {sorted(map(str, unknown))[0]!r}")
    m = {k: _str_list(match.get(k), path, rid, f"match.{k}") for k in _MATCH_KEYS}
    if not (m["text"] or m["code"] or m["enhanced"] or m["signal"]):
        raise fail("match needs text, code, enhanced or signal")
    m["text"] = [_fold_yo(src) for src in m["text"]]  # as normalize_text does to the input
    m["unless"] = [_fold_yo(src) for src in m["unless"]]
    for src in (*m["text"], *m["unless"]):
        problem = regex_problem(src, memo)
        if problem:
            raise fail(f"regex {src!r}: {problem}")
    for code in m["code"]:
        if not _CODE_RE.match(code):
            raise fail(f"code {code!r} is not a reply code like 535 or 5xx")
    for code in m["enhanced"]:
        if not _ENH_RE.match(code):
            raise fail(f"enhanced {code!r} is not a status code like 5.7.8 or 5.7.*")
    for proto in m["protocol"]:
        if proto not in PROTOCOLS:
            raise fail(f"protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
    m["provider"] = [p.lower() for p in m["provider"]]
    for sig in m["signal"]:
        if sig not in SIGNALS and sig != UNEXPLAINED:
            raise fail(f"unknown signal {sig!r}")

    title = _translations(raw.get("title"), path, f"rule {rid}: title")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, dict):
        raise fail("steps: expected a mapping with en and ru lists")
    extra = set(steps_raw) - set(LANGS)
    if extra:
        raise fail(f"steps: unknown language {sorted(map(str, extra))[0]!r}")
    steps: dict[str, list[str]] = {}
    for lang in LANGS:
        lst = steps_raw.get(lang)
        if (
            not isinstance(lst, list)
            or not lst
            or not all(isinstance(s, str) and s.strip() for s in lst)
        ):
            raise fail(f"steps: missing the {lang} translation (a non-empty list of text)")
        steps[lang] = [s.strip() for s in lst]
    if len(steps["en"]) != len(steps["ru"]):
        raise fail("steps: en and ru have a different number of steps")
    for lang in LANGS:
        for text in (title[lang], *steps[lang]):
            if text.count("[[") != text.count("]]"):
                raise fail(f"unbalanced [[ ]] in the {lang} text")
    links = _str_list(raw.get("links"), path, rid, "links")
    for link in links:
        if not _LINK_RE.match(link):
            raise fail(f"link {link!r} is not an http(s) URL")
    examples = _examples(raw.get("examples"), fail, "examples")
    if not examples:
        raise fail("needs at least one example")
    counter = _examples(raw.get("counterexamples"), fail, "counterexamples")
    return {
        "id": rid,
        "category": raw["category"],
        "severity": raw["severity"],
        "priority": priority,
        "fallback": fallback,
        "file": path,
        "text": m["text"],
        "unless": m["unless"],
        "code": m["code"],
        "enhanced": m["enhanced"],
        "protocol": m["protocol"],
        "provider": m["provider"],
        "signal": m["signal"],
        "title": title,
        "steps": steps,
        "links": links,
        "examples": examples,
        "counterexamples": counter,
    }


def _examples(value: Any, fail: Any, what: str) -> list[dict[str, Any]]:
    from maildiag.signals import SIGNALS

    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(f"{what} must be a list")
    out = []
    for item in value:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise fail(f"{what}: each is a text or a mapping (text, signal, protocol, provider)")
        unknown = set(item) - _EXAMPLE_KEYS
        if unknown:
            raise fail(f"{what}: unknown key {sorted(map(str, unknown))[0]!r}")
        ex = {k: item.get(k) for k in _EXAMPLE_KEYS}
        if not all(v is None or isinstance(v, str) for v in ex.values()):
            raise fail(f"{what}: text, signal, protocol and provider are strings")
        if not ex["text"] and not ex["signal"]:
            raise fail(f"{what}: an example needs a text or a signal")
        if ex["signal"] and ex["signal"] not in (*SIGNALS, "reply", UNEXPLAINED):
            raise fail(f"{what}: unknown signal {ex['signal']!r}")
        ex["text"] = ex["text"] or ""
        out.append(ex)
    return out


# --------------------------------------------------------------------------- regex analysis


def regex_problem(src: str, memo: dict[Any, int] | None = None) -> str | None:
    """Why a rule regex is unsafe or invalid, or None when it is fine.

    Refused, because a backtracking engine can spend minutes on one line with them: unbounded
    repeats; a repeat (that can run more than once) of anything that is not one fixed-width
    piece — a nested quantifier, an optional part or an alternation (``(?:a|a){1,60}``); and
    quantifiers in a row that can take turns on the same characters with more than
    ``MAX_BACKTRACK`` ways of splitting a text between them (``\\w{0,1000}\\w{0,1000}``).
    Matching is bounded in time besides (``USER_REGEX_BUDGET``), whatever slips through.
    ``memo``: character sets already worked out, shared by the regexes of one load.
    """
    try:
        re.compile(src, RE_FLAGS)
    except re.error as exc:
        return f"does not compile: {exc}"
    import re._constants as c  # type: ignore[import-not-found]  # CPython's own parser
    import re._parser as p  # type: ignore[import-not-found]

    tree = p.parse(src, RE_FLAGS)
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None))

    def walk(items: Any) -> str | None:
        for op, av in items:
            if op in repeats:
                lo, hi, body = av
                if hi == c.MAXREPEAT or hi > MAX_REPEAT_BOUND:
                    return "unbounded repeat (*, + or {n,}): write a bound such as {0,80}"
                if hi > 1:
                    if _has_repeat(body, c):
                        return "nested quantifiers (catastrophic backtracking)"
                    if _has_branch(body, c):
                        return (
                            "alternation inside a repeat (catastrophic backtracking): "
                            "use a character class, or repeat the whole alternation once"
                        )
                    if _variable(body, c):
                        return (
                            "a repeat of a part with optional pieces (catastrophic "
                            "backtracking): repeat one fixed-width piece"
                        )
                problem = walk(body)
            elif op == c.SUBPATTERN:
                problem = walk(av[3])
            elif op == c.BRANCH:
                problem = next((x for x in map(walk, av[1]) if x), None)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                problem = walk(av[1])
            elif op == c.GROUPREF:
                problem = "back-references are not allowed"
            else:
                problem = None
            if problem:
                return problem
        return None

    problem = walk(tree)
    if problem:
        return problem
    if _ranges(tree, c) < 2:
        return None  # one quantifier alone is bounded by MAX_REPEAT_BOUND
    ways = _chain_ways(tree, c, memo)
    if ways > MAX_BACKTRACK:
        return (
            f"quantifiers in a row that can match the same characters may try {ways} ways "
            f"of splitting a text between them (at most {MAX_BACKTRACK}): lower their bounds "
            "or put a character between them that they cannot match"
        )
    return None


def _has_repeat(items: Any, c: Any) -> bool:
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[1] > 1:
            return True
        if op == c.SUBPATTERN and _has_repeat(av[3], c):
            return True
        if op == c.BRANCH and any(_has_repeat(b, c) for b in av[1]):
            return True
    return False


def _has_branch(items: Any, c: Any) -> bool:
    for op, av in items:
        if op == c.BRANCH:
            return True
        if op == c.SUBPATTERN and _has_branch(av[3], c):
            return True
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and _has_branch(av[2], c):
            return True
        if op in (c.ASSERT, c.ASSERT_NOT) and _has_branch(av[1], c):
            return True
    return False


def _variable(items: Any, c: Any) -> bool:
    """Whether ``items`` can match texts of different lengths (or look ahead a variable
    distance): a repeat of them would have several ways to cover the same text."""
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and (av[0] != av[1] or _variable(av[2], c)):
            return True
        if op == c.SUBPATTERN and _variable(av[3], c):
            return True
        if op == c.BRANCH:
            return True
        if op in (c.ASSERT, c.ASSERT_NOT) and _variable(av[1], c):
            return True
    return False


# Characters to tell whether two pieces of a regex can match the same character: ASCII, Latin-1
# letters, Cyrillic, and a few spaces; a set of them is a bit mask over this list. (Enough for
# the question "could these two quantifiers take turns on one run of text"; a pair that only
# shares exotic characters is let through, and the time budget covers it.)
_SAMPLE = "".join(
    [chr(i) for i in range(0x80)]
    + [chr(i) for i in range(0xA0, 0x180)]
    + [chr(i) for i in range(0x400, 0x460)]
    + ["\u2028", "\u3000"]
)
_ALL = (1 << len(_SAMPLE)) - 1


def _mask_of(pattern: str) -> int:
    """The sample characters a one-character pattern matches: where it matches in the sample."""
    return sum(1 << m.start() for m in re.finditer(pattern, _SAMPLE, RE_FLAGS))


def _chars(op: Any, av: Any, c: Any, memo: dict[Any, int]) -> int | None:
    """The sample characters one single-character piece matches (a mask); None for others."""
    if op not in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
        return None
    key = (str(op), repr(av))
    mask = memo.get(key)
    if mask is None:
        if op == c.ANY:
            mask = _mask_of(".")
        elif op in (c.LITERAL, c.NOT_LITERAL):
            mask = _mask_of(re.escape(chr(av)))
            if op == c.NOT_LITERAL:
                mask = _ALL & ~mask
        else:
            mask = 0
            negate = False
            for o, a in av:
                if o == c.NEGATE:
                    negate = True
                elif o == c.LITERAL:
                    mask |= _mask_of(re.escape(chr(a)))
                elif o == c.RANGE:
                    mask |= _mask_of(f"[{re.escape(chr(a[0]))}-{re.escape(chr(a[1]))}]")
                elif o == c.CATEGORY:
                    mask |= _mask_of(_CATEGORY.get(str(a), r"[^\s\S]"))
            if negate:
                mask = _ALL & ~mask
        memo[key] = mask
    return mask


_CATEGORY = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _first_chars(items: Any, c: Any, memo: dict[Any, int]) -> int:
    """Every sample character any single-character piece inside ``items`` matches (a mask)."""
    out = 0
    for op, av in items:
        chars = _chars(op, av, c, memo)
        if chars is not None:
            out |= chars
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            out |= _first_chars(av[2], c, memo)
        elif op == c.SUBPATTERN:
            out |= _first_chars(av[3], c, memo)
        elif op == c.BRANCH:
            for branch in av[1]:
                out |= _first_chars(branch, c, memo)
    return out


def _ranges(items: Any, c: Any) -> int:
    """How many quantifiers with a range (``{0,80}``, ``?``) ``items`` holds, at any depth."""
    n = 0
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            n += (av[0] != av[1]) + _ranges(av[2], c)
        elif op == c.SUBPATTERN:
            n += _ranges(av[3], c)
        elif op == c.BRANCH:
            n += sum(_ranges(b, c) for b in av[1])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            n += _ranges(av[1], c)
    return n


def _chain_ways(items: Any, c: Any, memo: dict[Any, int] | None = None) -> int:
    """The most ways quantifiers in a row may split one text between them: the product of
    their ranges, for neighbours whose characters overlap (so the engine can hand characters
    from one to the next when what follows fails)."""
    memo = {} if memo is None else memo  # masks of the pieces seen, for this regex
    best = 1
    ways = 1
    reach = 0  # the characters the current chain can take (a mask)
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            lo, hi, body = av
            best = max(best, _chain_ways(body, c, memo))
            chars = _first_chars(body, c, memo)
            if hi > lo:
                ways = ways * (hi - lo + 1) if reach & chars else hi - lo + 1
                reach = chars
            elif not reach & chars:
                ways, reach = 1, 0
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            if op != c.AT:
                best = max(best, _chain_ways(av[1], c, memo))
            continue  # zero-width: the neighbours still touch
        else:
            if op == c.SUBPATTERN:
                best = max(best, _chain_ways(av[3], c, memo))
                chars = _first_chars(av[3], c, memo)
            elif op == c.BRANCH:
                best = max(best, *(_chain_ways(b, c, memo) for b in av[1]))
                chars = _first_chars([(op, av)], c, memo)
            else:
                chars = _chars(op, av, c, memo) or 0
            if not reach & chars:
                ways, reach = 1, 0
        best = max(best, ways)
    return best


def required_literals(src: str) -> list[tuple[str, bool]] | None:
    """Lower-cased literals one of which every match of ``src`` contains; None if unknown.

    Each comes with whether it starts at a word start of the text. A literal at the very start
    of the pattern (or of a group at its start) counts as one: rule regexes begin with a word.
    Used as a prefilter: a regex runs only when one of its literals is in the text.
    """
    import re._constants as c
    import re._parser as p

    tree = p.parse(src, RE_FLAGS)
    found = _required(list(tree), c, True)
    if not found or min(len(s) for s, _ in found) < 3:
        return None
    return sorted(set(found))


def literal_sets(src: str) -> list[list[str]]:
    """Every set of lower-cased literals one of which each match of ``src`` contains.

    Each set is a necessary condition on its own: the matcher checks them all (on ASCII text)
    before it runs a regex, so a regex whose rarest word is present but whose other words are
    not is never run. Sets with a letter that an ASCII letter matches case-insensitively
    (the long s, the Kelvin sign...) are left out: a lower-cased text would not show them.
    """
    import re._constants as c
    import re._parser as p

    tree = p.parse(src, RE_FLAGS)
    out = []
    for alts in _candidates(list(tree), c, True):
        lits = sorted({s for s, _ in alts})
        if all(_ascii_safe(s) for s in lits) and lits not in out:
            out.append(lits)
    return out


def _ascii_safe(literal: str) -> bool:
    """No ASCII character matches a non-ASCII character of the literal case-insensitively
    (there are four: the dotted and dotless i, the long s, the Kelvin sign)."""
    return literal.isascii() or not any(_ASCII_FOLD.match(ch) for ch in literal if not ch.isascii())


_ASCII_FOLD = re.compile(r"[\x00-\x7f]", re.IGNORECASE)


def _required(items: list[Any], c: Any, start_ok: bool) -> list[tuple[str, bool]] | None:
    candidates = _candidates(items, c, start_ok)
    if not candidates:
        return None
    # the best: the fewest alternatives whose shortest literal is longest
    return max(
        candidates,
        key=lambda alts: (
            min(len(s) for s, _ in alts) >= 5,
            -len(alts),
            min(len(s) for s, _ in alts),
        ),
    )


def _candidates(items: list[Any], c: Any, start_ok: bool) -> list[list[tuple[str, bool]]]:
    """The literal sets of a sequence: each holds the literals one of which a match contains."""
    candidates: list[list[tuple[str, bool]]] = []
    run: list[str] = []
    prev_ok = start_ok  # does the next element begin at a word start of the text?
    run_ok = start_ok

    def flush() -> None:
        if len(run) >= 3:
            candidates.append([("".join(run).lower(), run_ok)])
        run.clear()

    for op, av in items:
        char = None
        if op == c.LITERAL:
            char = chr(av)
        elif op == c.IN and len(av) == 1 and av[0][0] == c.LITERAL:
            char = chr(av[0][1])
        elif op == c.IN and av and all(o == c.LITERAL for o, _ in av):
            chars = {chr(v).lower() for _, v in av}
            if len(chars) == 1:
                char = chars.pop()
        if char is not None:
            if not run:
                run_ok = prev_ok
            run.append(char)
            prev_ok = not (char.isalnum() or char == "_")
            continue
        flush()
        sub: list[tuple[str, bool]] | None = None
        if op == c.SUBPATTERN:
            sub = _required(list(av[3]), c, prev_ok)
        elif op == c.BRANCH:
            alts = [_required(list(b), c, prev_ok) for b in av[1]]
            if all(alts):
                sub = [s for alt in alts for s in alt]  # type: ignore[union-attr]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            sub = _required(list(av[2]), c, prev_ok)
        if sub and min(len(s) for s, _ in sub) >= 3:
            candidates.append(sub)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            body = list(av[2])
            ends = _ends_non_word(body[-1][0], body[-1][1], c, prev_ok) if body else prev_ok
            prev_ok = ends and (prev_ok or av[0] >= 1)
        else:
            prev_ok = _ends_non_word(op, av, c, prev_ok)
    flush()
    return candidates


def _ends_non_word(op: Any, av: Any, c: Any, before: bool = False) -> bool:
    """Whether what follows this element starts at a word start of the text."""
    if op == c.AT:
        return True
    if op == c.IN:
        return _non_word_class(av, c)
    if op == c.SUBPATTERN:
        items = list(av[3])
        return _ends_non_word(items[-1][0], items[-1][1], c, before) if items else before
    if op == c.BRANCH:
        return all(
            _ends_non_word(list(b)[-1][0], list(b)[-1][1], c, before) if list(b) else before
            for b in av[1]
        )
    if op == c.LITERAL:
        return not (chr(av).isalnum() or chr(av) == "_")
    return False


def _non_word_class(av: Any, c: Any) -> bool:
    """A character class that never matches a word character (``\\s``, ``[ :]``...)."""
    for op, arg in av:
        if op == c.LITERAL and not (chr(arg).isalnum() or chr(arg) == "_"):
            continue
        if op == c.CATEGORY and arg == c.CATEGORY_SPACE:
            continue
        return False
    return True
