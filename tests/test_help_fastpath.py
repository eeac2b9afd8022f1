"""The stored top-level help (maildiag._help) is exactly what the typer app prints, and the fast
path that prints it never imports typer."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_cli

from maildiag import _help


def test_stored_help_is_what_typer_renders() -> None:
    assert _help.generate() == _help.HELP, "run `python -m maildiag._help` to regenerate"


def test_stored_help_names_every_command() -> None:
    from maildiag.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    names |= {g.name for g in app.registered_groups if g.name}
    for name in names:
        assert f"\n  {name} " in _help.HELP


def test_help_goes_to_stdout_and_exits_0() -> None:
    for flag in ("--help", "-h"):
        result = run_cli(flag)
        assert result.code == 0
        assert result.out == _help.HELP
        assert result.err == ""


def test_no_arguments_prints_help_on_stderr_as_a_usage_error() -> None:
    result = run_cli()
    assert result.code == 3
    assert result.out == ""
    assert result.err == _help.HELP


def _fresh(args: list[str], columns: str) -> tuple[int, str, set[str]]:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['maildiag', *sys.argv[1:]]\n"
        "from maildiag.__main__ import main\n"
        "rc = main()\n"
        "sys.stdout.flush()\n"
        "heavy = sorted(m for m in ('typer', 'click', 'rich', 'yaml') if m in sys.modules)\n"
        "print('MODULES=' + ','.join(heavy), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": columns},
    )
    modules = proc.stderr.rsplit("MODULES=", 1)[1].strip()
    return proc.returncode, proc.stdout, set(filter(None, modules.split(",")))


def test_fast_path_does_not_import_typer() -> None:
    code, out, modules = _fresh(["--help"], "120")
    assert code == 0
    assert out == _help.HELP
    assert modules == set()


def test_narrow_terminal_falls_back_to_typer_with_the_same_content() -> None:
    code, out, modules = _fresh(["--help"], "60")
    assert code == 0
    assert "typer" in modules
    assert out.startswith("Usage: maildiag [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in out
