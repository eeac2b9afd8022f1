"""Compiled rules and the matcher: which rules explain a text or a signal, best first."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from maildiag.rulebase.base import (
    _NEVER,
    MAX_FINDINGS,
    RE_FLAGS,
    USER_REGEX_BUDGET,
    USER_REGEX_TOTAL,
)
from maildiag.rulebase.cache import (
    _cache_path,
    _drop_cache,
    _read_cache,
    _stamp,
    _valid_texts,
    _write_cache,
)
from maildiag.rulebase.files import _dir_strings, _yaml_files
from maildiag.rulebase.regexes import _WORD_KEY, _WORD_KEY_ASCII, regex_problem
from maildiag.rulebase.render import Wording
from maildiag.rulebase.schema import _load_fresh
from maildiag.rulebase.text import extract_codes, normalize_text
from maildiag.signals import READ_THE_REPLY, REPLY

if TYPE_CHECKING:
    from pathlib import Path


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


class RuleBase(Wording):
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

    @classmethod
    def deferred(cls, extra_dirs: Sequence[str | Path] = ()) -> RuleBase:
        """``load()``, with the rules themselves read only when first used.

        A healthy check matches no reply: it needs only the texts its summaries are written
        with (``ui``, ``params``) and the interception products. When a run before left those
        in the cache for these very files, they are all that is read now, and the rest on
        first use (``_DeferredRuleBase``). The files were validated when that cache was
        written, so bad input still shows before any network step. Otherwise this is
        ``load()``, which also leaves the texts for the next run.
        """
        from maildiag.datacache import read, write

        dirs = _dir_strings(extra_dirs)
        stamp = _stamp([(d, _yaml_files(d)) for d in dirs])
        path = _cache_path(dirs)
        texts_path = path[: -len(".marshal")] + ".texts.marshal" if path else None
        if texts_path is not None:
            texts = read(texts_path, stamp)
            if _valid_texts(texts):
                return _DeferredRuleBase(texts, lambda: cls.load(extra_dirs))
        rb = cls.load(extra_dirs)
        if texts_path is not None:
            texts = {"ui": rb.ui, "params": rb.params}
            write(texts_path, stamp, {**texts, "interception": [list(x) for x in rb.interception]})
        return rb

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

    def explain(
        self,
        text: str = "",
        *,
        signal: str | None = None,
        protocol: str | None = None,
        provider: str | None = None,
    ) -> list[Match]:
        """What a text (and the signal it came with) means, best first: the one diagnosis path.

        ``check`` (a probe's problem), ``explain`` (a pasted text), ``settings`` and ``rules
        test`` all ask here, so the same reply gets the same answer everywhere.

        A server reply (no signal, or ``reply``): the text rules that match, one per category
        (a provider's rule and the generic one say the same), at most ``MAX_FINDINGS``; when no
        text rule matches, what the reply code alone means, its most specific meaning of each
        level (enhanced, basic). A probe signal: the rules that explain it; for a signal whose
        text is a reply worth reading (a refusing greeting, a refused STARTTLS) the text rules
        first, as they say more than the signal's generic rule.
        """
        if signal and signal != REPLY:
            if signal in READ_THE_REPLY and text:
                found = [m for m in self._reply(text, protocol, provider) if not m.rule.code_only]
                if found:
                    return found
            return self.match(text, signal=signal, protocol=protocol, provider=provider)
        return self._reply(text, protocol, provider)

    def _reply(self, text: str, protocol: str | None, provider: str | None) -> list[Match]:
        matches = self.match(text, protocol=protocol, provider=provider, codes_as_fallback=True)
        if not matches:
            return matches
        # with codes_as_fallback the matches are either all text rules or all code rules
        if matches[0].via != "code":
            if len(matches) == 1:
                return matches
            seen: set[str] = set()
            out = []
            for m in matches:
                if m.rule.category not in seen:
                    seen.add(m.rule.category)
                    out.append(m)
            return out[:MAX_FINDINGS]
        # only the reply code is known: its most specific meaning, enhanced and basic
        best: dict[int, Match] = {}
        for m in matches:
            best.setdefault(m.rank[4], m)
        return [best[level] for level in sorted(best, reverse=True)]

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
        norm = normalize_text(text) if text else ""
        scan = _Scan(
            norm, protocol.lower() if protocol else None, provider.lower() if provider else None
        )
        if signal and signal != REPLY:
            return _sorted(self._signal_matches(signal, text, scan))
        if not norm or norm.isspace():
            return []
        found = self.candidates(scan.lowered)
        if not scan.provider and not self._hint_set.isdisjoint(found):
            self._find_provider(found, scan)
        results: dict[str, Match] = {}
        # in pattern order: rules of equal rank come out in the same order in every process
        ordered = sorted(found)
        self._text_matches(self._plan, ordered, scan, results)
        if not results:  # the keyword layer speaks only when no specific rule recognised it
            self._text_matches(self._fallback_plan, ordered, scan, results)
        if not (codes_as_fallback and results):
            self._code_matches(scan, results)
        return _sorted(results)

    def _signal_matches(self, signal: str, text: str, scan: _Scan) -> dict[str, Match]:
        results: dict[str, Match] = {}
        for r in self._signal_rules.get(signal, ()):
            if not scan.applies(r) or _code_level(r, scan.basic, scan.enhanced) < 0:
                continue
            if not self._vetoed(r, scan.norm):
                # the caller's provider or protocol named: that rule's advice fits better
                named = bool(scan.provider and scan.provider in r.providers) or bool(
                    scan.protocol and r.protocols
                )
                rank = (1, r.priority, int(named), 0, 0, 0, int(not r.providers))
                results[r.id] = Match(r, "signal", rank, text.strip()[:500], {}, None)
        return results

    def _find_provider(self, found: set[int], scan: _Scan) -> None:
        """Provider hints in the text (``gsmtp``, ``yandex``): who answered, for ranking."""
        for i in self._hint_set & found:
            pid = self._hint_ids[i]
            if pid not in scan.known and self._search(i, scan.norm, scan.budget):
                scan.known.add(pid)

    def _text_matches(
        self,
        plan: dict[int, tuple[tuple[Rule, ...], tuple[tuple[str, ...], ...]]],
        ordered: list[int],
        scan: _Scan,
        results: dict[str, Match],
    ) -> None:
        for i in ordered:
            step = plan.get(i)
            if step is None:
                continue
            rules_here, sets = step
            if sets and scan.ascii_lower is not None and not _all_present(sets, scan.lowered):
                continue  # a literal set with none of its literals: the regex cannot match
            if i in self._guarded:
                m = self._guarded_search(i, scan.norm, scan.budget)
            else:
                m = (self._compiled[i] or self._pattern(i)).search(scan.norm)
            if m is not None:
                self._take_text_match(m, rules_here, scan, results)

    def _take_text_match(
        self, m: Any, rules_here: tuple[Rule, ...], scan: _Scan, results: dict[str, Match]
    ) -> None:
        start, end = m.span()
        length = end - start
        groups = m if m.re.groupindex else None
        for r in rules_here:
            prev = results.get(r.id)
            if prev is not None and prev.rank[5] >= length:
                continue
            if scan.filtered and not scan.applies(r):
                continue
            level = _code_level(r, scan.basic, scan.enhanced) if r.has_codes else 0
            if level < 0 or (r.unless_ids and self._scan_vetoed(r, scan)):
                continue
            known = 1 if r.providers and r.providers & scan.known else 0
            rank = (0, r.priority, known, 1, level, length, r.generic)
            results[r.id] = Match(r, "text", rank, None, groups, scan.code, (scan.norm, start, end))

    def _code_matches(self, scan: _Scan, results: dict[str, Match]) -> None:
        """The reply-code layer (RFC 3463 and the basic codes): rules matched by a code alone."""
        basic, enhanced, norm = scan.basic, scan.enhanced, scan.norm
        for key, level, spec in _code_keys(basic, enhanced):
            for r in self._code_rules.get(key, ()):
                if r.id in results or not scan.applies(r):
                    continue
                several = len(r.codes) + len(r.enhanced) > 1
                if (several and _code_level(r, basic, enhanced) < 0) or (
                    r.unless_ids and self._scan_vetoed(r, scan)
                ):
                    continue
                code = enhanced if level == 2 else basic
                start = norm.find(code) if code else -1
                span = (norm, start, start + len(code)) if code and start >= 0 else None
                bonus = int(bool(r.providers & scan.known)) if r.providers else 0
                rank = (0, r.priority, bonus, 0, level, spec, int(not r.providers))
                results[r.id] = Match(r, "code", rank, None if span else "", None, code, span)

    def _scan_vetoed(self, r: Rule, scan: _Scan) -> bool:
        return self._vetoed(r, scan.norm, scan.vetoes, scan.ascii_lower, scan.budget)

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


class _DeferredRuleBase(RuleBase):
    """A rule base whose texts and interception products are here at once and whose rules are
    loaded on first use of anything else (``RuleBase.deferred``), in whatever thread asks.

    Until then it holds ``ui``, ``params`` and ``interception`` only; the first attribute it
    lacks loads the whole rule base and takes over its state, after which it is that rule base.
    """

    def __init__(self, texts: Mapping[str, Any], loader: Any) -> None:
        import threading

        # no RuleBase.__init__: the rest of the state comes from the loaded rule base
        self.ui = texts["ui"]
        self.params = texts["params"]
        self.interception = [tuple(x) for x in texts["interception"]]
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded = False

    def __getattr__(self, name: str) -> Any:
        # only for what this object lacks: the rules' state
        if name.startswith("__") or self.__dict__.get("_loaded", True):
            raise AttributeError(name)
        with self.__dict__["_lock"]:
            if not self.__dict__["_loaded"]:
                full = self.__dict__["_loader"]()
                self.__dict__.update(full.__dict__)
                self.__dict__["_loaded"] = True
        return object.__getattribute__(self, name)


class _Scan:
    """One text being matched: its normal form, its codes, and what the rules learn of it."""

    __slots__ = (
        "norm", "lowered", "protocol", "provider", "filtered", "basic", "enhanced", "code",
        "known", "vetoes", "ascii_lower", "budget",
    )  # fmt: skip

    def __init__(self, norm: str, protocol: str | None, provider: str | None) -> None:
        self.norm = norm
        self.lowered = norm.lower()
        self.protocol = protocol
        self.provider = provider
        self.filtered = bool(protocol or provider)
        self.basic, self.enhanced = extract_codes(norm) if norm else (None, None)
        self.code = self.enhanced or self.basic
        self.known: set[str] = {provider} if provider else set()  # providers that answered
        self.vetoes: dict[int, bool] = {}  # "unless" patterns are shared: each runs once
        # the other literal sets say the same as the regex only where lower-casing is exact
        self.ascii_lower: str | None = self.lowered if norm.isascii() else None
        self.budget: list[float] = []  # the deadline of the user regexes on this text, once set

    def applies(self, r: Rule) -> bool:
        if self.protocol and r.protocols and self.protocol not in r.protocols:
            return False
        return not (self.provider and r.providers and self.provider not in r.providers)


def _all_present(sets: tuple[tuple[str, ...], ...], lowered: str) -> bool:
    """Whether each literal set has at least one of its literals in the text."""
    for lits in sets:
        for lit in lits:
            if lit in lowered:
                break
        else:
            return False
    return True


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
