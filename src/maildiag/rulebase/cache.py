"""The validated rule data cached as marshal in the user cache directory."""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Sequence
from typing import Any, TypeGuard

from maildiag.lang import LANGS
from maildiag.rulebase.base import _ID_RE, CACHE_FORMAT, SEVERITIES

# --------------------------------------------------------------------------- cache


def _cache_dir() -> str | None:
    if os.environ.get("MAILDIAG_NO_CACHE"):
        return None
    base = os.environ.get("MAILDIAG_CACHE_DIR")
    if base:
        return base
    local = os.environ.get("LOCALAPPDATA") if os.name == "nt" else None
    if local:  # Windows: the user's own, unshared application data
        return os.path.join(local, "maildiag", "cache")
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
    if getuid is None:
        # Windows: no owner ids, and mode bits that say nothing (every directory looks writable
        # by all); access is the ACL's business, and %LOCALAPPDATA% is the user's alone
        return stat.S_ISDIR(st.st_mode)
    if st.st_uid != getuid():
        return False
    return stat.S_ISDIR(st.st_mode) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


_MAX_CACHE = 64 * 1024 * 1024  # bytes: the built-in rules take about 0.5 MB


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
