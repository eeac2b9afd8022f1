"""``maildiag check``: one mailbox (ADDRESS) or every target of a targets file (``--config``).

Everything the user gave is validated before any network step (bad input is one line and exit
3); then the pipeline runs, a renderer prints, and the report's exit code is returned.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maildiag.errors import UsageError
from maildiag.models import MultiReport, Report
from maildiag.options import (
    Command,
    check_config,
    conflict,
    password_problem,
    secret_from_env,
    token_from_env,
)

if TYPE_CHECKING:
    from maildiag.config import RunConfig
    from maildiag.report.progress import Progress
    from maildiag.rulebase import RuleBase
    from maildiag.scheduler import HostLimiter


def main(command: Command, raw: Mapping[str, Any]) -> int:
    fmt = "nagios" if raw.get("format") == "nagios" else "text"
    try:
        values = command.checked(raw)
        fmt = output_format(values)
        return _main(values, fmt)
    except UsageError as exc:
        if fmt == "nagios":  # Nagios reads stdout: give it its UNKNOWN line too
            from maildiag.report.nagios import render_nagios_error

            _write(render_nagios_error(str(exc)))
        raise


# what shows each option's effect: others would ignore it without a word
TRANSCRIPT_FORMATS = ("text", "json", "junit", "html")
VERBOSE_FORMATS = ("text", "html")


def output_format(values: Mapping[str, Any]) -> str:
    """The output format; options that contradict each other are a usage error."""
    fmt = str(values.get("format") or "text")
    if values.get("json"):
        if values.get("format") not in (None, "json"):
            raise UsageError(f"--json and --format {fmt} contradict each other: choose one")
        fmt = "json"
    if values.get("transcript") and fmt not in TRANSCRIPT_FORMATS:
        raise UsageError(
            f"--transcript shows nothing in --format {fmt}: use it with "
            f"{', '.join(TRANSCRIPT_FORMATS)}"
        )
    if values.get("verbose") and fmt not in VERBOSE_FORMATS:
        raise UsageError(
            f"--verbose changes only the {' and '.join(VERBOSE_FORMATS)} reports, "
            f"not --format {fmt}"
        )
    return fmt


def config_conflict(values: Mapping[str, Any]) -> str | None:
    """What the command line says that a ``--config`` run would ignore: the options of one
    mailbox and the password's source belong to each target in the file."""
    from maildiag.options import CHECK, Scope

    for option in CHECK.options:
        if option.name == "address" or values.get(option.name) is None:
            continue
        if option.scope is Scope.TARGET or option.name == "password_env":
            return (
                f"{option.label} cannot be used with --config: give each target its "
                f"'{option.config}' in the targets file"
            )
    if values.get("ask_password"):
        return (
            "--ask-password cannot be used with --config: name each target's "
            "'password_env' in the targets file"
        )
    return None


def _main(values: Mapping[str, Any], fmt: str) -> int:
    values = {**values, "lang": values.get("lang") or _default_lang()}
    if values.get("config"):
        if values.get("address"):
            raise UsageError("check needs an ADDRESS, or --config FILE with the targets, not both")
        problem = config_conflict(values)
        if problem:
            raise UsageError(problem)
        return _check_many(values, fmt)
    if not values.get("address"):
        raise UsageError("Missing argument 'ADDRESS' (or --config FILE)")
    problem = conflict(values)  # before a prompt asks for a password that cannot be used
    if problem:
        raise UsageError(problem)
    config = check_config(values, password=read_password(values), oauth2_token=read_token(values))
    rules = load_rules(config.rules_dirs)
    report = _check_one(config, rules, fmt)
    return emit(
        report,
        fmt,
        values["fail_on"] or "fail",
        lang=config.lang,
        rules=rules,
        verbose=bool(values.get("verbose")),
    )


def read_password(values: Mapping[str, Any]) -> str | None:
    """From ``--password-env VAR`` or a no-echo prompt; never from argv."""
    if values.get("password_env") and values.get("ask_password"):
        raise UsageError("use either --password-env or --ask-password, not both")
    if values.get("password_env"):
        return secret_from_env(values["password_env"])
    if values.get("ask_password"):
        import getpass

        if not sys.stdin.isatty():
            raise UsageError("--ask-password needs a terminal; use --password-env in scripts")
        try:
            value = getpass.getpass("Password (not shown): ")
        except (EOFError, KeyboardInterrupt) as exc:
            raise UsageError("no password entered") from exc
        problem = password_problem(value) if value else None
        if problem:
            raise UsageError(f"--ask-password: the password {problem}")
        return value or None
    return None


def read_token(values: Mapping[str, Any]) -> str | None:
    """From ``--oauth2-token-env VAR`` (or ``oauth2_token_env`` of a target); never from argv."""
    var = values.get("oauth2_token_env")
    return token_from_env(var) if var else None


def load_rules(dirs: tuple[str, ...]) -> RuleBase:
    """The rule base, its rules read on first use (a healthy run matches no reply)."""
    from maildiag.rulebase import RuleBase, RuleBaseError

    try:
        return RuleBase.deferred(dirs)
    except RuleBaseError as exc:
        raise UsageError(f"cannot load the rule base: {exc}") from exc


def _check_one(
    config: RunConfig,
    rules: RuleBase,
    fmt: str,
    limiter: HostLimiter | None = None,
    progress: Progress | None = None,
    run: str = "",
) -> Report:
    from maildiag.pipeline import check_mailbox

    own = progress is None and fmt == "text" and _stderr_is_terminal()
    if own:
        progress = _progress(config.lang, rules)
    on_event, on_observation = progress.listener(run) if progress else (None, None)
    try:
        return check_mailbox(
            config,
            rules=rules,
            on_observation=on_observation,
            on_event=on_event,
            limiter=limiter,
        )
    finally:
        if own and progress is not None:
            progress.close()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _progress(lang: str, rules: RuleBase) -> Progress:
    """The live line on stderr (a terminal: ``_stderr_is_terminal``)."""
    import os

    from maildiag.report.progress import Progress

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        width = 0
    return Progress(lang, rules, sys.stderr, width=width if width >= 20 else 80)


def _check_many(values: Mapping[str, Any], fmt: str) -> int:
    """``--config FILE``: every target validated first, then checked concurrently."""
    from maildiag.pipeline import check_targets
    from maildiag.targets import load_targets

    targets = load_targets(values["config"])
    configs: dict[int, RunConfig] = {}
    for spec in targets.targets:
        try:
            target_values = spec.check_values(values)
            env = target_values.get("password_env")
            password = secret_from_env(env) if env else None
            configs[spec.index] = check_config(
                target_values, password=password, oauth2_token=read_token(target_values)
            )
        except UsageError as exc:
            raise UsageError(f"{spec.where}: target {spec.index}: {exc}") from exc
    rules = load_rules(tuple(values.get("rules") or ()))
    from maildiag.scheduler import HostLimiter

    # one cap per host and service for the whole run: 64 targets on one provider must not
    # open 64 connections to it at once
    limiter = HostLimiter(min(c.max_per_host for c in configs.values()))
    progress = _progress(values["lang"], rules) if fmt == "text" and _stderr_is_terminal() else None
    try:
        multi = check_targets(
            targets.targets,
            lambda spec: dataclasses.replace(
                _check_one(configs[spec.index], rules, fmt, limiter, progress, spec.name),
                name=spec.name,
            ),
            max_parallel=targets.max_parallel,
        )
    finally:
        if progress is not None:
            progress.close()
    return emit(
        multi,
        fmt,
        values["fail_on"] or "fail",
        lang=values["lang"],
        rules=rules,
        verbose=bool(values.get("verbose")),
    )


def emit(
    report: Report | MultiReport,
    fmt: str,
    fail_on: str,
    *,
    lang: str,
    rules: RuleBase,
    verbose: bool = False,
) -> int:
    """Print ``report`` (one mailbox's or a targets file's) and return its exit code."""
    from maildiag.report import apply_fail_on

    report = apply_fail_on(report, fail_on)  # type: ignore[type-var]  # R is either, not both
    try:
        _render(report, fmt, lang, rules, verbose)
        sys.stdout.flush()
    except BrokenPipeError:
        # `maildiag check ... | head -1`: the reader has what it wanted; the exit code is still
        # the run's (the error shell's 3, or 1, would misreport it)
        from maildiag.terminal import quiet_stdout

        quiet_stdout()
    return int(report.exit_code)


def _render(
    report: Report | MultiReport, fmt: str, lang: str, rules: RuleBase, verbose: bool
) -> None:
    from maildiag.terminal import markup_for, unicode_ok

    if fmt == "json":
        import json

        # \u escapes where the output's encoding (cp1251, ASCII) lacks a character: valid JSON
        _write(json.dumps(report.to_json(), ensure_ascii=not unicode_ok(), indent=2))
    elif fmt == "junit":
        from maildiag.report.junit import render_junit

        _write(markup_for(render_junit(report, rules=rules, lang=lang)))
    elif fmt == "html":
        from maildiag import __version__
        from maildiag.report.html import render_html

        page = render_html(report, rules=rules, lang=lang, verbose=verbose, version=__version__)
        _write(markup_for(page))
    elif fmt == "nagios":
        from maildiag.report.nagios import render_nagios

        _write(render_nagios(report, rules=rules, lang=lang))
    elif fmt == "prometheus":
        from maildiag.report.prometheus import render_prometheus

        _write_utf8(render_prometheus(report))
    else:
        from maildiag.report.text import render_text

        render_text(report, lang=lang, rules=rules, verbose=verbose)


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _write_utf8(text: str) -> None:
    """The Prometheus text format is UTF-8 whatever the console's encoding (the textfile
    collector reads it so); label values have no escaped form that another encoding could use."""
    from maildiag.terminal import unicode_ok

    text = text if text.endswith("\n") else text + "\n"
    buffer = getattr(sys.stdout, "buffer", None)
    if unicode_ok() or buffer is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def _default_lang() -> str:
    from maildiag.lang import default_lang

    return default_lang()
