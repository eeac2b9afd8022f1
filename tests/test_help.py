"""Help that teaches: -h and --help on every command, examples in each, clean usage lines."""

from __future__ import annotations

import re
from pathlib import Path

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


# -- conflicting options -------------------------------------------------------------------------

CONFLICTS = [
    (["--json", "--format", "junit"], "--json and --format junit contradict each other"),
    (["--no-clock", "--time-server", "127.0.0.1"], "--time-server names a time server but"),
    (["--format", "nagios", "--transcript"], "--transcript shows nothing in --format nagios"),
    (["--format", "prometheus", "--transcript"], "--transcript shows nothing in --format prom"),
    (["--json", "--verbose"], "--verbose changes only the text and html reports, not --format"),
    (["--format", "junit", "-v"], "--verbose changes only the text and html reports"),
]


@pytest.mark.parametrize(("args", "message"), CONFLICTS, ids=[" ".join(a) for a, _ in CONFLICTS])
def test_options_that_contradict_each_other_are_a_usage_error(
    args: list[str], message: str
) -> None:
    result = run_cli("check", "alice@example.test", *args)
    assert result.code == 3, result.out + result.err
    assert result.err.startswith(f"maildiag: {message}") and result.err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtp", "127.0.0.1:25"], "--smtp cannot be used with --config: give each target"),
        (["--login", "bob"], "--login cannot be used with --config"),
        (["--from", "bob@example.test"], "--from cannot be used with --config"),
        (["--password-env", "X"], "--password-env cannot be used with --config"),
        (["--ask-password"], "--ask-password cannot be used with --config"),
    ],
)
def test_what_a_config_run_would_ignore_is_a_usage_error(
    args: list[str], message: str, tmp_path: Path
) -> None:
    config = tmp_path / "targets.yaml"
    config.write_text("targets: [alice@example.test]\n", encoding="utf-8")
    result = run_cli("check", "--config", str(config), *args)
    assert result.code == 3, result.out + result.err
    assert result.err.startswith(f"maildiag: {message}")


def test_a_targets_file_that_contradicts_itself(tmp_path: Path) -> None:
    config = tmp_path / "targets.yaml"
    config.write_text(
        "targets:\n  - address: a@example.test\n    clock: false\n    time_server: 127.0.0.1\n",
        encoding="utf-8",
    )
    result = run_cli("check", "--config", str(config))
    assert result.code == 3
    assert result.err.strip().endswith(
        "target 1: 'time_server' names a time server but 'clock' turns the clock check off"
    )
