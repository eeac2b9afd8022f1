"""The validated rule data cached as marshal in the user cache directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TypeGuard

from maildiag.lang import LANGS
from maildiag.rulebase.base import _ID_RE, CACHE_FORMAT, SEVERITIES

# --------------------------------------------------------------------------- cache
# (where and how: maildiag.datacache, which the provider database's cache uses too)


def _cache_path(dirs: Sequence[str]) -> str | None:
    from maildiag.datacache import cache_file

    return cache_file("rules", "\0".join(os.path.abspath(d) for d in dirs))


def _stamp(listing: Sequence[tuple[str, list[tuple[str, int, int]]]]) -> list[Any]:
    # the code that reads and validates the rules: a change to any module of this package
    # changes what the data should be
    here = os.path.dirname(os.path.abspath(__file__))
    me = []
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            try:
                st = os.stat(os.path.join(here, name))
            except OSError:
                continue
            me.append([name, st.st_size, st.st_mtime_ns])
    return [CACHE_FORMAT, sys.version, me, [[d, [list(f) for f in files]] for d, files in listing]]


def _read_cache(path: str, stamp: list[Any]) -> dict[str, Any] | None:
    """The cached data (``maildiag.datacache.read``: None on any doubt — a link, a FIFO or
    another non-regular file, a file of another user, too large, unreadable, another version),
    or None when it is not the structure ``_load_fresh`` writes. (The regexes are linted again
    as they are first compiled.)"""
    from maildiag.datacache import read

    data = read(path, stamp)
    return data if isinstance(data, dict) and _valid_data(data) else None


def _write_cache(path: str, stamp: list[Any], data: dict[str, Any]) -> None:
    """Best effort (``maildiag.datacache.write``): no private cache directory, no cache."""
    from maildiag.datacache import write

    write(path, stamp, data)


def _drop_cache(path: str | None) -> None:
    """Remove a cache file found wanting, so the next run rebuilds it."""
    from maildiag.datacache import drop

    drop(path)


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


def _valid_texts(texts: Any) -> bool:
    """Whether cached texts have the structure ``RuleBase.deferred`` writes."""
    if type(texts) is not dict or set(texts) != {"ui", "params", "interception"}:
        return False
    interception = texts["interception"]
    return (
        _is_texts(texts["ui"])
        and _is_texts(texts["params"])
        and _is_list(interception, list)
        and all(_is_list(x, str) and len(x) == 2 for x in interception)
    )
