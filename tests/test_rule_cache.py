"""The rule cache cannot be turned against its user, and a bad entry costs one rebuild.

The cache (``maildiag.rulebase.cache``) is written under a fresh name with mode
0600 and renamed into place; it is read only from a directory this user owns and no one else may
write to, never through a link, never from a FIFO or another non-regular file, and what it holds
is checked like input: its structure, and each regex with the lint as it is compiled. Each test
plants one thing a hostile or broken cache could hold and checks that maildiag neither follows,
blocks, fails nor runs what the lint refuses, and that the next run has a good cache again.
"""

from __future__ import annotations

import marshal
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maildiag.rulebase import RuleBase
from maildiag.rulebase.cache import _cache_path, _read_cache, _stamp, _write_cache
from maildiag.rulebase.files import _dir_strings, _yaml_files

TEXT = "535 5.7.8 Error: authentication failed"


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A cache file as maildiag writes it, built once (a fresh load takes seconds)."""
    directory = tmp_path_factory.mktemp("built")
    saved = os.environ.get("MAILDIAG_CACHE_DIR")
    os.environ["MAILDIAG_CACHE_DIR"] = str(directory)
    try:
        RuleBase.load()
        return cache_file().read_bytes()
    finally:
        if saved is None:
            del os.environ["MAILDIAG_CACHE_DIR"]
        else:
            os.environ["MAILDIAG_CACHE_DIR"] = saved


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(directory))
    return directory


def cache_file() -> Path:
    path = _cache_path(_dir_strings())
    assert path is not None
    return Path(path)


def current_stamp() -> list[Any]:
    return _stamp([(d, _yaml_files(d)) for d in _dir_strings()])


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` on a thread: the test fails, rather than hangs, if it blocks (in a system call:
    a thread stuck in Python-level work that holds the GIL would stall the test itself)."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    return box[0]


def test_the_cache_is_private_and_no_planted_link_redirects_the_write(
    cache_dir: Path, good_cache: bytes
) -> None:
    victim = cache_dir.parent / "victim.txt"
    victim.write_text("precious\n")
    path = cache_file()
    # the temporary name an earlier version used: a link there once made it overwrite the victim
    Path(f"{path}.{os.getpid()}.tmp").symlink_to(victim)
    cached = marshal.loads(good_cache)
    _write_cache(str(path), cached["stamp"], cached["data"])
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.is_symlink()
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [path.name, f"{path.name}.{os.getpid()}.tmp"]  # no temporary file is left over
    )
    assert RuleBase.load().from_cache


def test_a_link_at_the_cache_path_is_not_followed(cache_dir: Path, good_cache: bytes) -> None:
    path = cache_file()
    elsewhere = cache_dir.parent / "elsewhere.marshal"
    elsewhere.write_bytes(good_cache)
    path.symlink_to(elsewhere)  # a valid cache, but behind a link
    assert _read_cache(str(path), current_stamp()) is None
    cached = marshal.loads(good_cache)
    _write_cache(str(path), cached["stamp"], cached["data"])
    assert not path.is_symlink() and elsewhere.read_bytes() == good_cache
    assert RuleBase.load().from_cache


def test_a_fifo_at_the_cache_path_does_not_block(cache_dir: Path, good_cache: bytes) -> None:
    path = cache_file()
    os.mkfifo(path)
    assert within(30, lambda: _read_cache(str(path), current_stamp())) is None
    cached = marshal.loads(good_cache)
    _write_cache(str(path), cached["stamp"], cached["data"])
    assert stat.S_ISREG(path.stat().st_mode)  # replaced by a real cache
    assert RuleBase.load().from_cache


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_a_directory_of_another_user_is_not_used(cache_dir: Path, good_cache: bytes) -> None:
    path = cache_file()
    path.write_bytes(good_cache)
    cached = marshal.loads(good_cache)
    os.chown(cache_dir, 54321, 54321)
    try:
        assert _read_cache(str(path), current_stamp()) is None  # not read ...
        path.unlink()
        _write_cache(str(path), cached["stamp"], cached["data"])
        assert not path.exists()  # ... nor written
    finally:
        os.chown(cache_dir, os.getuid(), os.getgid())
    _write_cache(str(path), cached["stamp"], cached["data"])
    assert RuleBase.load().from_cache


def test_a_directory_others_may_write_to_is_not_used(cache_dir: Path, good_cache: bytes) -> None:
    path = cache_file()
    path.write_bytes(good_cache)
    os.chmod(cache_dir, 0o777)  # a shared directory: anyone could plant a file here
    try:
        assert _read_cache(str(path), current_stamp()) is None
    finally:
        os.chmod(cache_dir, 0o700)
    assert RuleBase.load().from_cache


def _break_a_rule(data: dict[str, Any]) -> None:
    del data["rules"][0]["title"]


def _rules_not_a_list(data: dict[str, Any]) -> None:
    data["rules"] = 5


def _pattern_not_text(data: dict[str, Any]) -> None:
    data["patterns"][0] = 42


def _keys_out_of_step(data: dict[str, Any]) -> None:
    data["keys"].pop()


def _guarded_out_of_range(data: dict[str, Any]) -> None:
    data["guarded"] = [10**6]


def _rule_regex_unknown(data: dict[str, Any]) -> None:
    data["rules"][0]["text"] = ["a regex the pattern list does not have"]


@pytest.mark.parametrize(
    "damage",
    [
        _break_a_rule,
        _rules_not_a_list,
        _pattern_not_text,
        _keys_out_of_step,
        _guarded_out_of_range,
        _rule_regex_unknown,
    ],
)
def test_a_structurally_wrong_entry_is_not_used(
    cache_dir: Path, good_cache: bytes, damage: Callable[[dict[str, Any]], None]
) -> None:
    """The stamp says "current", the structure is not what we write: not used."""
    from maildiag.rulebase.cache import _valid_data

    cached = marshal.loads(good_cache)
    assert _valid_data(cached["data"])
    damage(cached["data"])
    cache_file().write_bytes(marshal.dumps(cached))
    assert _read_cache(str(cache_file()), current_stamp()) is None


def test_a_corrupt_or_wrong_entry_costs_one_rebuild(cache_dir: Path, good_cache: bytes) -> None:
    cache_file().write_bytes(good_cache[: len(good_cache) // 2])  # cut off, as by a full disk
    rules = RuleBase.load()
    assert not rules.from_cache and rules.match(TEXT)
    assert RuleBase.load().from_cache  # rewritten: the runs after it use the cache again


# In a child process: re holds the GIL while it backtracks, so a thread could not time out.
_MATCH_FROM_CACHE = (
    "import sys\n"
    "from maildiag.rulebase import RuleBase\n"
    "rules = RuleBase.load()\n"
    "assert rules.from_cache\n"
    "rules.match(sys.argv[1])\n"
)


def test_a_hostile_regex_planted_in_the_cache_is_not_run_unbounded(
    cache_dir: Path, good_cache: bytes
) -> None:
    """A regex the lint refuses, in place of the one that recognises TEXT, its literal index
    left as it was: the lint runs again as it is compiled, so it runs on the time budget
    (before, it backtracked for ever), and the cache is dropped for the next run to rebuild."""
    import subprocess
    import sys

    cached = marshal.loads(good_cache)
    data = cached["data"]
    cache_file().write_bytes(good_cache)
    original = RuleBase.load().match(TEXT)[0].rule.text[0]
    hostile = r"(?:a|a){1,60}!!!z"  # exponential in the a's that follow
    i = data["patterns"].index(original)
    data["patterns"][i] = hostile
    for rule in data["rules"]:
        for key in ("text", "unless"):
            rule[key] = [hostile if src == original else src for src in rule[key]]
    cache_file().write_bytes(marshal.dumps(cached))
    child = subprocess.run(
        [sys.executable, "-c", _MATCH_FROM_CACHE, TEXT + " " + "a" * 40],
        capture_output=True,
        text=True,
        env={**os.environ, "MAILDIAG_CACHE_DIR": str(cache_dir)},
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert not cache_file().exists()
