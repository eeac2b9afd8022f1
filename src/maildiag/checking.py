"""The ``check`` command: validate options into a ``RunConfig``, run, render, pick the exit code.

Everything the user typed is validated here, before any network step, so bad input is one line
and exit 3. Rendering is delegated to the pure renderers in ``maildiag.report``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maildiag.config import DEFAULT_PORTS, RunConfig, explicit_security
from maildiag.errors import UsageError
from maildiag.models import ExitCode, Observation, Report, Security, Service, Source, Target

if TYPE_CHECKING:
    from maildiag.multi import MultiReport
    from maildiag.rulebase import RuleBase

FORMATS = ("text", "json", "junit", "nagios", "prometheus")


@dataclass(frozen=True)
class CheckOptions:
    """The ``check`` command's options exactly as typed (strings unparsed)."""

    address: str
    smtp: str | None = None
    imap: str | None = None
    pop3: str | None = None
    only: str | None = None
    login: str | None = None
    password_env: str | None = None
    ask_password: bool = False
    sender: str | None = None
    ca_file: str | None = None
    resolver: str | None = None
    time_server: str | None = None
    no_clock: bool = False
    timeout: float = 10.0
    warn_days: int = 21
    crit_days: int = 7
    fmt: str = "text"
    config_file: str | None = None
    fail_on: str = "fail"
    rules: tuple[str, ...] = ()
    lang: str = "en"
    transcript: bool = False


def parse_server(spec: str, service: Service) -> Target:
    """``HOST[:PORT][/ssl|starttls|plain]`` (IPv6 as ``[::1]:465``) → Target; UsageError if bad."""
    option = f"--{service}"
    text = spec.strip()
    mode: Security | None = None
    if "/" in text:
        text, _, mode_text = text.rpartition("/")
        try:
            mode = Security(mode_text.lower())
        except ValueError:
            raise UsageError(
                f"{option} {spec}: mode must be ssl, starttls or plain, not {mode_text!r}"
            ) from None
        if mode is Security.AUTO:
            raise UsageError(f"{option} {spec}: mode must be ssl, starttls or plain")
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"{option} {spec}: expected [IPv6]:PORT")
            port = _port(rest[1:], option, spec)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, option, spec)
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address
    else:
        host = text
    host = host.strip()
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"{option} {spec}: no host name")
    if port is None:
        port = DEFAULT_PORTS[(service, mode or Security.SSL)]
    security = mode or explicit_security(port)
    return Target(service, host, port, security, Source.EXPLICIT)


def _port(text: str, option: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{option} {spec}: port must be a number from 1 to 65535")
    return int(text)


def build_config(opts: CheckOptions, *, password: str | None) -> RunConfig:
    from maildiag.address import parse_address
    from maildiag.engine import only_services

    parse_address(opts.address)  # raises AddressError (a ValueError) with one line
    if opts.sender:
        parse_address(opts.sender)
    explicit = tuple(
        parse_server(spec, svc)
        for svc, spec in (
            (Service.SMTP, opts.smtp),
            (Service.IMAP, opts.imap),
            (Service.POP3, opts.pop3),
        )
        if spec
    )
    only = only_services(opts.only) if opts.only else frozenset(Service)
    if not opts.timeout > 0 or opts.timeout > 3600:
        raise UsageError(
            f"--timeout must be above 0 and at most 3600 seconds, not {opts.timeout:g}"
        )
    if opts.warn_days < 0 or opts.crit_days < 0:
        raise UsageError("--warn-days and --crit-days cannot be negative")
    if opts.crit_days > opts.warn_days:
        raise UsageError(
            f"--crit-days ({opts.crit_days}) cannot exceed --warn-days ({opts.warn_days})"
        )
    if opts.ca_file:
        _check_ca_file(opts.ca_file)
    if opts.resolver:
        from maildiag.dnsclient import parse_server as parse_resolver

        parse_resolver(opts.resolver)
    if opts.time_server:
        _check_host_port(opts.time_server, "--time-server")
    return RunConfig(
        address=opts.address,
        explicit=explicit,
        only=only,
        login=opts.login,
        password=password,
        sender=opts.sender,
        ca_file=opts.ca_file,
        resolver=opts.resolver,
        time_server=opts.time_server,
        check_clock=not opts.no_clock,
        timeout=opts.timeout,
        warn_days=opts.warn_days,
        crit_days=opts.crit_days,
        lang=opts.lang,
        transcript=opts.transcript,
        rules_dirs=opts.rules,
    )


def _check_ca_file(path: str) -> None:
    import ssl

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--ca-file {path}: no such file")
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(p))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UsageError(
            f"--ca-file {path}: not a readable PEM bundle of CA certificates "
            f"({getattr(exc, 'reason', None) or exc})"
        ) from None


def _check_host_port(spec: str, option: str) -> None:
    host, sep, port = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "")
    if not host.strip() or (sep and not (port.isdigit() and 0 < int(port) < 65536)):
        raise UsageError(f"{option} {spec}: expected HOST[:PORT]")


def read_password(opts: CheckOptions) -> str | None:
    """From ``--password-env VAR`` or a no-echo prompt; never from argv."""
    if opts.password_env and opts.ask_password:
        raise UsageError("use either --password-env or --ask-password, not both")
    if opts.password_env:
        value = os.environ.get(opts.password_env)
        if value is None:
            raise UsageError(
                f"--password-env {opts.password_env}: that environment variable is not set"
            )
        if not value:
            raise UsageError(f"--password-env {opts.password_env}: the variable is empty")
        return value
    if opts.ask_password:
        import getpass

        if not sys.stdin.isatty():
            raise UsageError("--ask-password needs a terminal; use --password-env in scripts")
        try:
            value = getpass.getpass("Password (not shown): ")
        except (EOFError, KeyboardInterrupt):
            raise UsageError("no password entered") from None
        return value or None
    return None


def load_rules(dirs: tuple[str, ...]) -> RuleBase:
    from maildiag.rulebase import RuleBase, RuleBaseError

    for d in dirs:
        if not Path(d).is_dir():
            raise UsageError(f"--rules {d}: not a directory")
    try:
        return RuleBase.load(dirs)
    except RuleBaseError as exc:
        raise UsageError(f"cannot load the rule base: {exc}") from None


def run_check_command(opts: CheckOptions) -> int:
    try:
        return _run_check_command(opts)
    except UsageError as exc:
        if opts.fmt == "nagios":  # Nagios reads stdout: give it its UNKNOWN line too
            from maildiag.report.nagios import render_nagios_error

            _write(render_nagios_error(str(exc)))
        raise


def _run_check_command(opts: CheckOptions) -> int:
    if opts.fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {opts.fmt!r}")
    if opts.fail_on not in ("warn", "fail"):
        raise UsageError(f"--fail-on must be warn or fail, not {opts.fail_on!r}")
    try:
        if opts.config_file:
            return _run_many(opts)
        password = read_password(opts)
        config = build_config(opts, password=password)
    except ValueError as exc:  # AddressError and friends carry their one line
        raise UsageError(str(exc)) from None
    rules = load_rules(opts.rules)
    report = _run_one(config, rules, opts.fmt)
    return emit(report, opts.fmt, opts.fail_on, lang=config.lang, rules=rules)


def _run_one(config: RunConfig, rules: RuleBase, fmt: str) -> Report:
    from maildiag.engine import run_check

    progress = None
    if fmt == "text" and sys.stderr.isatty():
        from maildiag.report.text import Progress

        progress = Progress(config.lang, rules)
    try:
        return run_check(
            config, rules=rules, on_observation=progress.update if progress else _ignore
        )
    finally:
        if progress is not None:
            progress.close()


def _ignore(_: Observation) -> None:
    pass


def emit(
    report: Report | MultiReport, fmt: str, fail_on: str, *, lang: str, rules: RuleBase
) -> int:
    """Print ``report`` (a Report or a multi-target report) and return its exit code.

    ``rules``: the rule base of the run, whose ``ui`` tables word the text report.
    """
    from maildiag.report import apply_fail_on

    report = apply_fail_on(report, fail_on)  # type: ignore[type-var]  # R is either, not both
    if fmt == "json":
        import json

        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
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
    return int(report.exit_code)


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _run_many(opts: CheckOptions) -> int:
    """``--config FILE``: every target validated first, then run concurrently under the cap."""
    from maildiag.multi import ConfigError, load_config, run_many

    try:
        targets = load_config(opts.config_file or "")
        configs = {}
        for spec in targets.targets:
            try:
                configs[id(spec)] = build_config(spec.to_options(opts), password=spec.password())
            except ValueError as exc:  # a bad server spec, address, CA file ...
                raise ConfigError(f"{spec.where}: target {spec.index}: {exc}") from None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    rules = load_rules(opts.rules)
    multi = run_many(
        targets.targets,
        lambda spec: _run_one(configs[id(spec)], rules, "json"),
        max_parallel=targets.max_parallel,
    )
    return emit(multi, opts.fmt, opts.fail_on, lang=opts.lang, rules=rules)


__all__ = ["CheckOptions", "ExitCode", "parse_server", "run_check_command"]
