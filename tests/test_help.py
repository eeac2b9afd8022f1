"""Help that teaches: -h and --help on every command, examples in each, clean usage lines."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli, run_cli_subprocess

from maildiag.options import COMMANDS

COMMAND_ARGS = [c.name.split() for c in COMMANDS]


@pytest.mark.parametrize("args", COMMAND_ARGS, ids=[c.name for c in COMMANDS])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help_with_examples(args: list[str], flag: str) -> None:
    result = run_cli(*args, flag)
    assert result.code == 0 and result.err == ""
    usage = result.out.splitlines()[0]
    assert usage.startswith(f"Usage: maildiag {' '.join(args)} [options]"), usage
    assert not re.search(r"\{|\[\[|<str>", usage), usage
    examples = result.out.split("Examples:\n", 1)[1].splitlines()
    assert len(examples) >= 2 and all(" maildiag " in f" {e}" for e in examples)


@pytest.mark.parametrize("args", [[], ["rules"]])
def test_no_command_prints_help_as_a_usage_error(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.code == 3 and result.out == ""
    assert result.err.startswith("Usage: maildiag")


def test_top_level_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.code == 0
    for name in {c.name.split()[0] for c in COMMANDS}:
        assert re.search(rf"^\s+{name}\s", result.out, re.M), name


def test_help_in_a_fresh_interpreter() -> None:
    result = run_cli_subprocess("check", "--help")
    assert result.code == 0 and "--password-env VAR" in result.out
