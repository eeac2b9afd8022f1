"""``maildiag --help`` without importing typer: the text generated from the typer app, stored here.

Importing typer alone costs more than the rest of a cold start, so ``__main__`` prints ``HELP`` for
exactly ``maildiag --help`` / ``-h`` (and, on stderr, for no arguments) when the terminal is at
least ``WIDTH`` columns wide — the width click itself would use there. Anything else goes to typer.
tests/test_help_fastpath.py regenerates the text from ``maildiag.cli.app`` and fails when it
drifts; ``python -m maildiag._help`` rewrites this file.
"""

from __future__ import annotations

# click renders help at min(columns, 80) - 2; at 80 columns or more that is always 78.
WIDTH = 80

HELP = """\
Usage: maildiag [OPTIONS] COMMAND [ARGS]...

  Tells you why your mail program cannot send or receive, and what to change.

Options:
  --version    Print the version and exit.
  --traceback  Show the Python traceback of an internal error.
  --help       Show this message and exit.

Commands:
  check     Diagnose a mailbox's servers end to end.
  explain   Diagnose an error text (argument, stdin, or each line of a log).
  settings  The settings a mail program needs: servers, ports, security,...
  rules     Validate and test a rule base.
"""


def wide_enough() -> bool:
    """The terminal is as wide as click needs to print ``HELP`` exactly (shutil's rules)."""
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            import sys

            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        if columns <= 0:
            columns = 80  # shutil.get_terminal_size's fallback (pipes, files)
    return columns >= WIDTH


def generate() -> str:
    """The top-level help as the typer app renders it at ``WIDTH`` columns or more."""
    import typer

    from maildiag.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("maildiag", [], resilient_parsing=True, terminal_width=WIDTH - 2)
    with ctx:
        return ctx.get_help() + "\n"


def _rewrite() -> None:  # pragma: no cover - a maintenance command
    from pathlib import Path

    path = Path(__file__)
    source = path.read_text(encoding="utf-8")
    head, rest = source.split('HELP = """\\\n', 1)
    _, tail = rest.split('"""\n', 1)
    text = generate()
    if '"""' in text or "\\" in text:
        raise SystemExit("the help text needs escaping: write it by hand")
    path.write_text(head + 'HELP = """\\\n' + text + '"""\n' + tail, encoding="utf-8")
    print(f"rewrote {path}")


if __name__ == "__main__":  # pragma: no cover
    _rewrite()
