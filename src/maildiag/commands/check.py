"""``maildiag check``: one mailbox (ADDRESS) or every target of a targets file (``--config``).

Everything the user gave is validated before any network step (bad input is one line and exit
3); then the pipeline runs, a renderer prints, and the report's exit code is returned.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maildiag.errors import UsageError
from maildiag.models import MultiReport, Observation, Report
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


def output_format(values: Mapping[str, Any]) -> str:
    fmt = values.get("format") or "text"
    if values.get("json"):
        if values.get("format") not in (None, "json"):
            raise UsageError(f"--json and --format {fmt} contradict each other: choose one")
        return "json"
    return str(fmt)


def _main(values: Mapping[str, Any], fmt: str) -> int:
    values = {**values, "lang": values.get("lang") or _default_lang()}
    if values.get("config"):
        if values.get("address"):
            raise UsageError("check needs an ADDRESS, or --config FILE with the targets, not both")
        return _check_many(values, fmt)
    if not values.get("address"):
        raise UsageError("Missing argument 'ADDRESS' (or --config FILE)")
    problem = conflict(values)  # before a prompt asks for a password that cannot be used
    if problem:
        raise UsageError(problem)
    config = check_config(values, password=read_password(values), oauth2_token=read_token(values))
    rules = load_rules(config.rules_dirs)
    report = _check_one(config, rules, fmt)
    return emit(report, fmt, values["fail_on"] or "fail", lang=config.lang, rules=rules)


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
    config: RunConfig, rules: RuleBase, fmt: str, limiter: HostLimiter | None = None
) -> Report:
    from maildiag.pipeline import check_mailbox

    progress = None
    if fmt == "text" and sys.stderr.isatty():
        from maildiag.report.text import Progress

        progress = Progress(config.lang, rules)
    try:
        return check_mailbox(
            config,
            rules=rules,
            on_observation=progress.update if progress else _ignore,
            limiter=limiter,
        )
    finally:
        if progress is not None:
            progress.close()


def _ignore(_: Observation) -> None:
    pass


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
    multi = check_targets(
        targets.targets,
        lambda spec: _check_one(configs[spec.index], rules, "json", limiter),
        max_parallel=targets.max_parallel,
    )
    return emit(multi, fmt, values["fail_on"] or "fail", lang=values["lang"], rules=rules)


def emit(
    report: Report | MultiReport, fmt: str, fail_on: str, *, lang: str, rules: RuleBase
) -> int:
    """Print ``report`` (one mailbox's or a targets file's) and return its exit code."""
    from maildiag.report import apply_fail_on

    report = apply_fail_on(report, fail_on)  # type: ignore[type-var]  # R is either, not both
    try:
        _render(report, fmt, lang, rules)
        sys.stdout.flush()
    except BrokenPipeError:
        # `maildiag check ... | head -1`: the reader has what it wanted; the exit code is still
        # the run's (the error shell's 3, or 1, would misreport it)
        from maildiag.terminal import quiet_stdout

        quiet_stdout()
    return int(report.exit_code)


def _render(report: Report | MultiReport, fmt: str, lang: str, rules: RuleBase) -> None:
    if fmt == "json":
        import json

        _write(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    elif fmt == "junit":
        from maildiag.report.junit import render_junit

        _write(render_junit(report))
    elif fmt == "nagios":
        from maildiag.report.nagios import render_nagios

        _write(render_nagios(report))
    elif fmt == "prometheus":
        from maildiag.report.prometheus import render_prometheus

        _write(render_prometheus(report))
    else:
        from maildiag.report.text import render_text

        render_text(report, lang=lang, rules=rules)


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _default_lang() -> str:
    from maildiag.lang import default_lang

    return default_lang()
