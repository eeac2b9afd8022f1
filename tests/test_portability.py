"""maildiag runs on Windows and macOS as well: no POSIX-only call without a fallback.

The source is scanned for the calls and modules that exist only on POSIX systems (or only on
Linux); each may appear only behind ``getattr`` or an ``os.name``/``sys.platform`` test. The
rule cache, which on POSIX trusts only a directory of the user's own that others cannot write
to, is used on Windows too, where owners and mode bits do not say that.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from maildiag import datacache

SRC = Path(__file__).resolve().parent.parent / "src" / "maildiag"
POSIX_ONLY = re.compile(
    r"^\s*(?:import|from)\s+(?:fcntl|termios|tty|pty|pwd|grp|resource|posix)\b"
    r"|\bos\.(?:geteuid|getuid|getegid|fork|killpg|setsid|setpgrp|getpgid|uname|sync|mkfifo)\("
    r"|\bsignal\.(?:SIGALRM|SIGHUP|SIGKILL|SIGUSR1|SIGUSR2|SIGPIPE)\b|\bsignal\.alarm\("
    r"|\bselect\.(?:poll|epoll|kqueue)\(",
    re.M,
)


def test_no_posix_only_call_without_a_fallback() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for m in POSIX_ONLY.finditer(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(SRC)}: {m.group(0).strip()}")
    assert not found, "POSIX-only calls (use getattr or an os.name test):\n" + "\n".join(found)


def test_select_is_only_used_on_sockets() -> None:
    # select() on a pipe or a file fails on Windows; on sockets it works everywhere
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if "select.select(" in line:
                assert "socks" in line, f"{path.name}: {line.strip()}"


def test_the_cache_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # what every directory looks like through Windows' stat()
    assert not datacache.own_directory(str(cache), create=False)  # POSIX: refused
    monkeypatch.delattr(os, "geteuid")  # Windows has no owner ids
    assert datacache.own_directory(str(cache), create=False)
    assert stat.S_ISDIR(os.stat(cache).st_mode)

    monkeypatch.delenv("MAILDIAG_CACHE_DIR", raising=False)
    monkeypatch.delenv("MAILDIAG_NO_CACHE", raising=False)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    monkeypatch.setattr(os, "name", "nt")
    assert datacache.cache_dir() == os.path.join(
        str(tmp_path / "AppData" / "Local"), "maildiag", "cache"
    )
