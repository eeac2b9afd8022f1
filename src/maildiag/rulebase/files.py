"""Where rule files live: the built-in rules, ``MAILDIAG_RULES`` and ``--rules`` directories."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from maildiag.rulebase.base import RuleBaseError

if TYPE_CHECKING:
    from pathlib import Path


# --------------------------------------------------------------------------- locations


def builtin_rules_dir() -> Path:
    """The shipped rules: ``maildiag/rules`` in a wheel, ``<repo>/rules`` in a source checkout."""
    from pathlib import Path

    return Path(_builtin_dir())


def _builtin_dir() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the maildiag package
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
