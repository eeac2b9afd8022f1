"""Rule files read and validated: every problem one line naming the file and the rule."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from maildiag.lang import LANGS
from maildiag.rulebase.base import (
    _CODE_RE,
    _ENH_RE,
    _EXAMPLE_KEYS,
    _FILE_KEYS,
    _ID_RE,
    _INTERCEPTION_KEYS,
    _LINK_RE,
    _MATCH_KEYS,
    _RULE_KEYS,
    PROTOCOLS,
    SEVERITIES,
    RuleBaseError,
)
from maildiag.rulebase.files import _builtin_dir
from maildiag.rulebase.regexes import (
    _WORD,
    _word_keys,
    literal_sets,
    regex_problem,
    required_literals,
)
from maildiag.rulebase.text import _fold_yo
from maildiag.signals import UNEXPLAINED

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
    """Every rule file of every directory, validated, and the prefilter's index of them."""
    found = _Collected()
    builtin = os.path.abspath(_builtin_dir())
    for directory, files in listing:
        ours = os.path.abspath(directory) == builtin
        seen_here: dict[str, str] = {}
        for path, _size, _mtime in files:
            doc = _yaml_load(path)
            if doc is not None:
                found.add_file(path, doc, ours=ours, seen_here=seen_here)
    index = _prefilter_index(found.rules, found.hints)
    return {
        "rules": list(found.rules.values()),
        "params": found.params,
        "ui": found.ui,
        "interception": found.interception,
        "hints": found.hints,
        **index,
        "guarded": [i for i, src in enumerate(index["patterns"]) if src not in found.vetted],
    }


class _Collected:
    """What the rule files say, file after file (a later directory's rule replaces an earlier
    one with the same id)."""

    def __init__(self) -> None:
        self.rules: dict[str, dict[str, Any]] = {}
        self.params: dict[str, dict[str, str]] = {}
        self.ui: dict[str, dict[str, str]] = {}
        self.interception: list[list[str]] = []
        self.hints: dict[str, list[str]] = {}
        self.memo: dict[Any, int] = {}  # regex_problem's character sets, worked out once
        self.vetted: set[str] = set()  # the regexes of the built-in rules: they ship tested

    def add_file(self, path: str, doc: Any, *, ours: bool, seen_here: dict[str, str]) -> None:
        if not isinstance(doc, dict):
            raise RuleBaseError(f"{path}: a rule file is a mapping (rules:, params:, ui:)")
        unknown = set(doc) - _FILE_KEYS
        if unknown:
            raise RuleBaseError(f"{path}: unknown top-level key {sorted(map(str, unknown))[0]!r}")
        for name, texts in (doc.get("params") or {}).items():
            self.params[str(name)] = _translations(texts, path, f"params.{name}")
        for name, texts in (doc.get("ui") or {}).items():
            self.ui[str(name)] = _translations(texts, path, f"ui.{name}")
        self.interception.extend(_interception(doc.get("interception"), path))
        for pid, pats in (doc.get("provider_hints") or {}).items():
            self.add_hints(path, str(pid), pats, ours)
        raw_rules = doc.get("rules") or []
        if not isinstance(raw_rules, list):
            raise RuleBaseError(f"{path}: 'rules' must be a list")
        for n, raw in enumerate(raw_rules, 1):
            self.add_rule(_validate_rule(raw, path, n, self.memo), path, ours, seen_here)

    def add_hints(self, path: str, pid: str, pats: Any, ours: bool) -> None:
        pats = _str_list(pats, path, f"provider_hints.{pid}", "patterns")
        for src in pats:
            problem = regex_problem(src, self.memo)
            if problem:
                raise RuleBaseError(f"{path}: provider_hints.{pid}: regex {src!r}: {problem}")
        self.hints.setdefault(pid.lower(), []).extend(pats)
        if ours:
            self.vetted.update(pats)

    def add_rule(
        self, rule: dict[str, Any], path: str, ours: bool, seen_here: dict[str, str]
    ) -> None:
        rid = rule["id"]
        if rid in seen_here:
            raise RuleBaseError(f"{path}: rule {rid}: duplicate id (also in {seen_here[rid]})")
        seen_here[rid] = path
        self.rules.pop(rid, None)  # a later directory replaces: keep the newer order
        self.rules[rid] = rule
        if ours:
            self.vetted.update(rule["text"])
            self.vetted.update(rule["unless"])


def _prefilter_index(
    rules: Mapping[str, Mapping[str, Any]], hints: Mapping[str, list[str]]
) -> dict[str, Any]:
    """Every regex once (``patterns``), with the literals the prefilter looks for (``keys``:
    each keyed by its rarest word prefix in the rules' examples) and the other literal sets a
    match needs (``extra``)."""
    patterns: list[str] = []
    index: dict[str, int] = {}
    literals: list[list[tuple[str, bool]] | None] = []
    hint_sources = [src for pats in hints.values() for src in pats]
    for src in (*(x for r in rules.values() for x in (*r["text"], *r["unless"])), *hint_sources):
        if src not in index:
            index[src] = len(patterns)
            patterns.append(src)
            literals.append(required_literals(src))
    freq: dict[str, int] = {}  # how common each word prefix is in real texts (the examples)
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
    return {"patterns": patterns, "keys": keys, "extra": extra}


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
    """One rule of a file, checked: its kind, its match conditions, its words, its examples."""
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
    kind = _rule_kind(raw, fail)
    match = _match_conditions(raw.get("match"), path, rid, fail, memo)
    title, steps = _words(raw, path, rid, fail)
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
        **kind,
        "file": path,
        **match,
        "title": title,
        "steps": steps,
        "links": links,
        "examples": examples,
        "counterexamples": counter,
    }


def _rule_kind(raw: Mapping[str, Any], fail: Callable[[str], RuleBaseError]) -> dict[str, Any]:
    """Category, severity, priority and whether the rule is of the keyword layer."""
    from maildiag.models import Category

    if raw.get("category") not in {c.value for c in Category}:
        raise fail(f"unknown category {raw.get('category')!r}")
    if raw.get("severity") not in SEVERITIES:
        raise fail(f"severity must be one of {', '.join(SEVERITIES)}")
    fallback = raw.get("fallback", False)
    if not isinstance(fallback, bool):
        raise fail("fallback must be true or false")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not -9 <= priority <= 9:
        raise fail("priority must be an integer from -9 to 9")
    return {
        "category": raw["category"],
        "severity": raw["severity"],
        "priority": priority,
        "fallback": fallback,
    }


def _match_conditions(
    match: Any,
    path: str,
    rid: str,
    fail: Callable[[str], RuleBaseError],
    memo: dict[Any, int] | None,
) -> dict[str, list[str]]:
    """``match:``: each condition a list of strings, regexes linted, codes and names known."""
    from maildiag.signals import SIGNALS

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
    m["provider"] = [p.lower() for p in m["provider"]]
    for src in (*m["text"], *m["unless"]):
        problem = regex_problem(src, memo)
        if problem:
            raise fail(f"regex {src!r}: {problem}")
    checks: tuple[tuple[str, Callable[[str], bool], str], ...] = (
        (
            "code",
            lambda v: bool(_CODE_RE.match(v)),
            "code {!r} is not a reply code like 535 or 5xx",
        ),
        (
            "enhanced",
            lambda v: bool(_ENH_RE.match(v)),
            "enhanced {!r} is not a status code like 5.7.8 or 5.7.*",
        ),
        (
            "protocol",
            lambda v: v in PROTOCOLS,
            "protocol {!r} is not one of " + ", ".join(PROTOCOLS),
        ),
        ("signal", lambda v: v in SIGNALS or v == UNEXPLAINED, "unknown signal {!r}"),
    )
    for key, ok, message in checks:
        for value in m[key]:
            if not ok(value):
                raise fail(message.format(value))
    return m


def _words(
    raw: Mapping[str, Any], path: str, rid: str, fail: Callable[[str], RuleBaseError]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Title and steps in every language, the same number of steps in each."""
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
        if not isinstance(lst, list) or not lst or not all(_is_text(s) for s in lst):
            raise fail(f"steps: missing the {lang} translation (a non-empty list of text)")
        steps[lang] = [s.strip() for s in lst]
    if len(steps["en"]) != len(steps["ru"]):
        raise fail("steps: en and ru have a different number of steps")
    for lang in LANGS:
        for text in (title[lang], *steps[lang]):
            if text.count("[[") != text.count("]]"):
                raise fail(f"unbalanced [[ ]] in the {lang} text")
    return title, steps


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


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
