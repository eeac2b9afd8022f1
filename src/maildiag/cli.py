"""The command line: the parsers come from the option declarations (``maildiag.options``), and one
error shell turns every failure into one line on stderr and an exit code.

``main(argv)`` parses, hands the checked values to the command's module (``maildiag.commands``)
and returns its exit code. Bad input — an unknown option, a value an option cannot take, a broken
targets or rule file — is a ``UsageError``: one ``maildiag: ...`` line and exit 3, never a
traceback. A bug in us is one line too (``internal error: ...``); ``--traceback`` (or
``MAILDIAG_TRACEBACK=1``) re-raises it for debugging. ``-h``/``--help`` work everywhere.

Only the standard library's ``argparse`` is imported here: a command pays for the modules it uses,
not for the machinery of the others.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, NoReturn

from maildiag import __version__
from maildiag.errors import ExitCode, MaildiagError, UsageError
from maildiag.options import COMMANDS, Command, Option
from maildiag.terminal import tolerate

PROG = "maildiag"
DESCRIPTION = "Tells you why your mail program cannot send or receive, and what to change."
# the module whose ``main(values)`` runs each command
MODULES = {
    "check": "maildiag.commands.check",
    "explain": "maildiag.commands.explain",
    "settings": "maildiag.commands.settings",
    "rules lint": "maildiag.commands.rules",
    "rules test": "maildiag.commands.rules",
    "exporter": "maildiag.commands.exporter",
}


class _Help(Exception):
    """A help or version text was asked for (exit 0), or is the answer to no arguments."""

    def __init__(self, text: str, code: int = 0) -> None:
        super().__init__(text)
        self.text, self.code = text, code


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised (not printed) and help returned (not printed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{_plain(message, self)} (see '{self.prog} --help')")

    def print_help(self, file: Any = None) -> None:
        raise _Help(self.format_help())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Help(message or "", status)


def _plain(message: str, parser: argparse.ArgumentParser) -> str:
    """argparse's wording made plainer; an unknown option never echoes its value."""
    if message.startswith("unrecognized arguments: "):
        unknown = message.removeprefix("unrecognized arguments: ").split()[0]
        if not unknown.startswith("-"):
            return f"Got unexpected extra argument ({unknown!r})"
        name = unknown.split("=", 1)[0]
        flags = [f for a in parser._actions for f in a.option_strings]
        hint = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
        return f"No such option: {name}" + (f" (did you mean {hint[0]}?)" if hint else "")
    if message.startswith("argument COMMAND: invalid choice: "):
        name = message.removeprefix("argument COMMAND: invalid choice: ").split(" (")[0]
        return f"No such command {name}"
    if message.startswith("the following arguments are required: "):
        return "Missing argument " + message.removeprefix("the following arguments are required: ")
    if message.endswith("expected one argument"):
        return f"Option {message.split()[1].rstrip(':')} requires an argument"
    return message


def build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    """The top-level parser, and each command's by command name."""
    parser = _Parser(
        prog=PROG, description=DESCRIPTION, usage=f"{PROG} [--version] [--traceback] COMMAND ..."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback of an internal error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, Any] = {}
    by_name: dict[str, _Parser] = {}
    for spec in COMMANDS:
        where, _, name = spec.name.rpartition(" ")
        if where and where not in groups:
            group = commands.add_parser(
                where, help="validate and test a rule base", prog=f"{PROG} {where}"
            )
            by_name[where] = group
            groups[where] = group.add_subparsers(dest="subcommand", metavar="COMMAND")
        into = groups[where] if where else commands
        sub = into.add_parser(
            name,
            prog=f"{PROG} {spec.name}",
            help=spec.help,
            usage=_usage(spec),
            description=spec.help[:1].upper() + spec.help[1:] + ".",
            epilog="Examples:\n" + "\n".join(f"  {e}" for e in spec.examples),
        )
        sub.set_defaults(_command=spec)
        for option in spec.options:
            if option.cli:
                _add(sub, option)
        by_name[spec.name] = sub
    return parser, by_name


def _usage(spec: Command) -> str:
    args = " ".join(
        f"[{o.metavar}]" if spec.name != "settings" else str(o.metavar)
        for o in spec.options
        if o.positional and not o.negated_by
    )
    return f"{PROG} {spec.name} [options] {args}".rstrip()


def _add(parser: argparse.ArgumentParser, option: Option) -> None:
    if option.negated_by:
        parser.add_argument(
            option.negated_by,
            dest=option.name,
            action="store_const",
            const=False,
            default=None,
            help=f"do not {option.help}",
        )
        return
    if option.positional:
        parser.add_argument(option.name, nargs="?", metavar=option.metavar, help=option.help)
    elif option.metavar is None:
        parser.add_argument(
            *option.flags, dest=option.name, action="store_true", default=None, help=option.help
        )
    else:
        parser.add_argument(
            *option.flags,
            dest=option.name,
            metavar=option.metavar,
            action="append" if option.repeat else "store",
            help=option.help,
        )


def parse(argv: Sequence[str]) -> tuple[Command, dict[str, Any]]:
    """The command and its options' raw values (as typed: ``Command.checked`` parses them);
    ``UsageError`` for what argparse itself finds wrong."""
    parser, by_name = build_parser()
    if not argv:
        raise _Help(parser.format_help(), ExitCode.ERROR)
    ns, extra = parser.parse_known_args(list(argv))
    if ns.traceback:
        os.environ["MAILDIAG_TRACEBACK"] = "1"
    if ns.version:
        raise _Help(f"{PROG} {__version__}\n")
    spec: Command | None = getattr(ns, "_command", None)
    if extra:
        (by_name[spec.name] if spec else parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if spec is None:  # no command, or a group without its subcommand (``maildiag rules``)
        group = by_name.get(getattr(ns, "command", None) or "", parser)
        raise _Help(group.format_help(), ExitCode.ERROR)
    return spec, {o.name: getattr(ns, o.name, None) for o in spec.options}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; every failure becomes one stderr line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    # cp1251/cp866 redirects and consoles, ASCII: what they lack is written plainly (OK, ->)
    tolerate(sys.stdout, sys.stderr)
    try:
        spec, values = parse(args)
        module = import_module(MODULES[spec.name])
        return int(module.main(spec, values))
    except _Help as shown:
        stream = sys.stdout if shown.code == 0 else sys.stderr
        stream.write(shown.text)
        return shown.code
    except KeyboardInterrupt:
        _error("interrupted")
        return ExitCode.ERROR
    except BrokenPipeError:
        _quiet_stdout()
        return ExitCode.ERROR
    except UsageError as exc:
        _error(str(exc))
        return ExitCode.ERROR
    except Exception as exc:
        if os.environ.get("MAILDIAG_TRACEBACK"):
            raise
        if isinstance(exc, MaildiagError):
            _error(str(exc))
        else:
            _error(
                f"internal error: {type(exc).__name__}: {exc} (run with --traceback for "
                "details, and please report it)"
            )
        return ExitCode.ERROR


def _error(message: str) -> None:
    line = " ".join(message.split())
    sys.stderr.write(f"{PROG}: {line}\n")


def _quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): nothing more to say, and no noise at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
