"""Validated data kept between runs as marshal files in the user's cache directory.

The rule base (``maildiag.rulebase``) and the provider database
(``maildiag.discovery.providers``) are YAML checked strictly at load; a run that finds them
unchanged reads what the last run validated instead, without importing yaml. A cache file holds
``{"stamp": ..., "data": ...}``: the caller's stamp names everything the data was made from (its
files' paths, sizes and mtimes, the code's version), and a file whose stamp differs is not used.

Where: ``MAILDIAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/maildiag`` (``~/.cache/maildiag``);
``MAILDIAG_NO_CACHE`` turns caching off. The directory must be this user's alone: whoever could
write into it could plant data for maildiag to trust or a link for it to write through, so a
directory another user owns or may write into means running without a cache. Files are read
without following links and only when regular, this user's and not too large; they are written
under a fresh name and renamed into place, so no reader sees half a file.
"""

from __future__ import annotations

import marshal
import os
import sys
from typing import Any

MAX_SIZE = 64 * 1024 * 1024  # bytes: the built-in rules take about 0.5 MB


def cache_dir() -> str | None:
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


def cache_file(kind: str, key: str) -> str | None:
    """The cache file of ``kind`` for ``key`` (this interpreter's own), or None without a cache."""
    base = cache_dir()
    if not base:
        return None
    import zlib

    tag = f"{sys.implementation.cache_tag}-{zlib.crc32(key.encode('utf-8', 'replace')):08x}"
    return os.path.join(base, f"{kind}-{tag}.marshal")


def file_stamp(path: str) -> list[int]:
    """[size, mtime_ns] of a file, [0, 0] when it cannot be read (part of a stamp)."""
    try:
        st = os.stat(path)
    except OSError:
        return [0, 0]
    return [st.st_size, st.st_mtime_ns]


def own_directory(path: str, *, create: bool) -> bool:
    """Whether ``path`` is a directory only this user can change (created 0700 if missing)."""
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


def read(path: str, stamp: Any) -> Any:
    """The cached data when its stamp is ``stamp``, else None — also on any doubt: a link, a
    FIFO or another non-regular file, a file of another user, too large, unreadable."""
    import stat

    if not own_directory(os.path.dirname(path), create=False):
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
            or st.st_size > MAX_SIZE
            or (getuid is not None and st.st_uid != getuid())
        ):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            blob = fh.read(MAX_SIZE + 1)
        cached = marshal.loads(blob)
    except (OSError, ValueError, EOFError, TypeError, MemoryError, RecursionError):
        return None
    finally:
        os.close(fd)
    if not isinstance(cached, dict) or cached.get("stamp") != stamp:
        return None
    return cached.get("data")


def write(path: str, stamp: Any, data: Any) -> None:
    """Best effort: a read-only, missing or shared cache directory just means no cache.

    The file is written under a fresh name (``mkstemp``: O_EXCL, mode 0600, in the cache
    directory itself) and renamed over the old one, so a reader never sees half a file and no
    planted link can redirect the write.
    """
    import tempfile

    directory = os.path.dirname(path)
    if not own_directory(directory, create=True):
        return
    prefix = "." + os.path.basename(path).split("-", 1)[0] + "-"
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
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


def drop(path: str | None) -> None:
    """Remove a cache file found wanting, so the next run rebuilds it."""
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
