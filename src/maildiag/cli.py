"""The typer app: options become a frozen ``RunConfig``; one error shell maps failures to exits.

``main()`` runs the click command with ``standalone_mode=False`` so that every usage error —
click's own exit code 2 — becomes one line on stderr and exit 3, the SPEC's "could not run".
``--traceback`` (or ``MAILDIAG_TRACEBACK=1``) re-raises for debugging.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from maildiag import __version__
from maildiag.models import ExitCode

app = typer.Typer(
    name="maildiag",
    help="Tells you why your mail program cannot send or receive, and what to change.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
rules_app = typer.Typer(help="Validate and test a rule base.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


class Fail(Exception):
    """Stop with one line on stderr and an exit code (3 unless told otherwise)."""

    def __init__(self, message: str, code: int = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def _version(value: bool) -> None:
    if value:
        print(f"maildiag {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the Python traceback of an internal error.")
    ] = False,
) -> None:
    if traceback:
        os.environ["MAILDIAG_TRACEBACK"] = "1"


Lang = Annotated[
    str | None,
    typer.Option(
        "--lang",
        metavar="en|ru",
        help="Language of titles and steps: en or ru (default from the locale).",
    ),
]
RulesDir = Annotated[
    list[str] | None,
    typer.Option(
        "--rules", metavar="DIR", help="Also load the rules in DIR (also MAILDIAG_RULES)."
    ),
]


def _lang(value: str | None) -> str:
    from maildiag.config import LANGS, default_lang

    if value is None:
        return default_lang()
    if value not in LANGS:
        raise Fail(f"--lang must be one of {', '.join(LANGS)}, not {value!r}")
    return value


@app.command()
def check(
    address: Annotated[
        str | None,
        typer.Argument(
            metavar="ADDRESS", help="The mailbox address, e.g. you@yandex.ru (not with --config)."
        ),
    ] = None,
    smtp: Annotated[
        str | None,
        typer.Option(
            "--smtp",
            metavar="HOST[:PORT][/MODE]",
            help="Use this SMTP server (mode ssl, starttls or plain).",
        ),
    ] = None,
    imap: Annotated[
        str | None,
        typer.Option("--imap", metavar="HOST[:PORT][/MODE]", help="Use this IMAP server."),
    ] = None,
    pop3: Annotated[
        str | None,
        typer.Option("--pop3", metavar="HOST[:PORT][/MODE]", help="Use this POP3 server."),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--only", metavar="SERVICES", help="Check only these: smtp,imap,pop3."),
    ] = None,
    login: Annotated[
        str | None,
        typer.Option("--login", metavar="LOGIN", help="Login name when it differs from ADDRESS."),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="VAR",
            help="Read the password from this environment variable.",
        ),
    ] = None,
    ask_password: Annotated[
        bool, typer.Option("--ask-password", help="Prompt for the password without echo.")
    ] = False,
    sender: Annotated[
        str | None,
        typer.Option("--from", metavar="ADDRESS", help="Sender address to test ownership of."),
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option("--ca-file", metavar="PEM", help="Also trust these CA certificates."),
    ] = None,
    resolver: Annotated[
        str | None,
        typer.Option(
            "--resolver", metavar="IP[:PORT]", help="DNS server to ask instead of the system's."
        ),
    ] = None,
    time_server: Annotated[
        str | None,
        typer.Option(
            "--time-server", metavar="HOST[:PORT]", help="SNTP server for the clock check."
        ),
    ] = None,
    no_clock: Annotated[bool, typer.Option("--no-clock", help="Skip the clock check.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Limit for each network step.")
    ] = 10.0,
    warn_days: Annotated[
        int,
        typer.Option(
            "--warn-days", metavar="N", help="Warn when a certificate expires within N days."
        ),
    ] = 21,
    crit_days: Annotated[
        int,
        typer.Option(
            "--crit-days", metavar="N", help="Fail when a certificate expires within N days."
        ),
    ] = 7,
    fmt: Annotated[
        str,
        typer.Option("--format", metavar="FORMAT", help="text, json, junit, nagios or prometheus."),
    ] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Short for --format json.")] = False,
    config_file: Annotated[
        str | None,
        typer.Option("--config", metavar="FILE", help="Check every target in a YAML file."),
    ] = None,
    fail_on: Annotated[
        str, typer.Option("--fail-on", metavar="warn|fail", help="What counts as failure for CI.")
    ] = "fail",
    rules: RulesDir = None,
    lang: Lang = None,
    transcript: Annotated[
        bool,
        typer.Option("--transcript", help="Also show each protocol dialogue, secrets redacted."),
    ] = False,
) -> None:
    """Diagnose a mailbox's servers end to end."""
    from maildiag.checking import CheckOptions, run_check_command

    if (address is None) == (config_file is None):
        raise Fail(
            "check needs an ADDRESS, or --config FILE with the targets, not both"
            if address
            else "Missing argument 'ADDRESS' (or --config FILE)"
        )
    options = CheckOptions(
        address=address or "",
        smtp=smtp,
        imap=imap,
        pop3=pop3,
        only=only,
        login=login,
        password_env=password_env,
        ask_password=ask_password,
        sender=sender,
        ca_file=ca_file,
        resolver=resolver,
        time_server=time_server,
        no_clock=no_clock,
        timeout=timeout,
        warn_days=warn_days,
        crit_days=crit_days,
        fmt="json" if as_json else fmt,
        config_file=config_file,
        fail_on=fail_on,
        rules=tuple(rules or ()),
        lang=_lang(lang),
        transcript=transcript,
    )
    raise typer.Exit(run_check_command(options))


@app.command()
def explain(
    text: Annotated[
        str | None, typer.Argument(metavar="TEXT", help="The error text, or - to read stdin.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", metavar="LOG", help="Diagnose each line of a mail log.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    lang: Lang = None,
    rules: RulesDir = None,
) -> None:
    """Diagnose an error text (argument, stdin, or each line of a log)."""
    from maildiag.explaining import run_explain

    raise typer.Exit(run_explain(text, file, as_json, _lang(lang), tuple(rules or ())))


@app.command()
def settings(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The mailbox address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    lang: Lang = None,
    resolver: Annotated[
        str | None, typer.Option("--resolver", metavar="IP[:PORT]", help="DNS server to ask.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Limit for each network step.")
    ] = 10.0,
    rules: RulesDir = None,
) -> None:
    """The settings a mail program needs: servers, ports, security, login form."""
    from maildiag.settings_cli import run_settings

    _positive_timeout(timeout)
    raise typer.Exit(
        run_settings(
            address,
            as_json=as_json,
            lang=_lang(lang),
            resolver=resolver,
            timeout=timeout,
            rules_dirs=tuple(rules or ()),
        )
    )


@rules_app.command("lint")
def rules_lint(
    directory: Annotated[
        str | None, typer.Argument(metavar="[DIR]", help="Rule directory (default: built-in).")
    ] = None,
) -> None:
    """Validate a rule base: schema, regexes, duplicate ids."""
    from maildiag.rules_cli import lint

    raise typer.Exit(lint([directory] if directory else []))


@rules_app.command("test")
def rules_test(
    directory: Annotated[
        str | None, typer.Argument(metavar="[DIR]", help="Rule directory (default: built-in).")
    ] = None,
) -> None:
    """Run every rule's embedded examples and counterexamples."""
    from maildiag.rules_cli import test

    raise typer.Exit(test([directory] if directory else []))


def _positive_timeout(timeout: float) -> None:
    if not timeout > 0 or timeout > 3600:
        raise Fail(
            f"--timeout must be a number of seconds above 0 and at most 3600, not {timeout:g}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the app; every failure becomes one stderr line and an exit code."""
    try:
        from typer._click import exceptions as click_exc
    except ImportError:  # typer releases that use click itself
        from click import exceptions as click_exc  # type: ignore[no-redef,import-not-found]

    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        result: Any = command.main(args=args, prog_name="maildiag", standalone_mode=False)
        return int(result or 0)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click_exc.UsageError as exc:
        no_args = getattr(click_exc, "NoArgsIsHelpError", None)
        if no_args is not None and isinstance(exc, no_args):
            # bare `maildiag`: the help, on stderr, as the usage error it is
            print(exc.format_message(), file=sys.stderr)
            return ExitCode.ERROR
        hint = exc.ctx.command_path if exc.ctx else "maildiag"
        _error(f"{exc.format_message()} (see '{hint} --help')")
        return ExitCode.ERROR
    except click_exc.ClickException as exc:
        _error(exc.format_message())
        return ExitCode.ERROR
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted")
        return ExitCode.ERROR
    except Fail as exc:
        _error(str(exc))
        return exc.code
    except Exception as exc:
        if os.environ.get("MAILDIAG_TRACEBACK"):
            raise
        from maildiag.errors import MaildiagError

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
    print(f"maildiag: {line}", file=sys.stderr)
