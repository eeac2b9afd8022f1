"""Rule files read and validated: every problem one line naming the file and the rule."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
