"""``maildiag exporter``: serve the checks of a targets file to Prometheus (``maildiag.exporter``).

Everything is validated before the server listens: the file (targets, modules, the
``exporter:`` section), every password a target names (``password_env``: the variable must be
set), the rule base and the provider database (loaded once, shared by every probe). Bad input
is one line and exit 3, as for every command. The settings come from the command line, else
from the file's ``exporter:`` section, else their defaults. SIGTERM or Ctrl-C stops the server
(exit 0).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from maildiag.errors import UsageError
from maildiag.options import Command, Scope, check_config, secret_from_env

if TYPE_CHECKING:
    from maildiag.exporter import Exporter


def main(command: Command, raw: Mapping[str, Any]) -> int:
    from maildiag.exporter import make_server

    exporter, (host, port) = build(command, command.checked(raw))
    try:
        server = make_server(exporter, host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {_url(host, port)}: {exc.strerror or exc}") from exc
    bound = server.server_address[1]
    sys.stderr.write(
        f"maildiag exporter: {len(exporter.targets)} targets, {len(exporter.modules)} modules; "
        f"serving {_url(host, bound)}/probe?target=NAME and /metrics\n"
    )
    sys.stderr.flush()
    return serve(server)


def build(
    command: Command, values: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> tuple[Exporter, tuple[str, int]]:
    """The exporter of these checked option values, and the address to listen on; every
    problem is a ``UsageError`` (``environ``: where passwords are read, default os.environ)."""
    from maildiag.commands.check import load_rules
    from maildiag.discovery.providerdb import ProviderError
    from maildiag.discovery.providers import load_providers
    from maildiag.exporter import Exporter, Settings
    from maildiag.scheduler import HostLimiter
    from maildiag.targets import load_targets

    if not values.get("config"):
        raise UsageError("exporter needs --config FILE: the targets file it serves")
    loaded = load_targets(values["config"], exporter=True)
    chosen = {
        o.name: next(
            (v for v in (values.get(o.name), loaded.serve.get(o.name)) if v is not None),
            o.default,
        )
        for o in command.options
        if o.scope is Scope.SERVE
    }
    if chosen["listen"] is None:
        raise UsageError(
            "exporter needs --listen ADDR:PORT (or 'listen' in the file's exporter section)"
        )
    rules_dirs = tuple(values.get("rules") or ())
    targets = {}
    passwords = []
    for spec in loaded.targets:
        try:
            target_values = spec.check_values({"rules": rules_dirs})
            env = target_values.get("password_env")
            password = secret_from_env(env, environ) if env else None
            config = check_config(target_values, password=password)
        except UsageError as exc:
            raise UsageError(f"{spec.where}: target {spec.index}: {exc}") from exc
        targets[spec.name] = config
        if password:
            local = config.address.rpartition("@")[0]
            passwords.append((password, (config.login or config.address, config.address, local)))
    rules = load_rules(rules_dirs)
    try:
        providers = load_providers(rules_dirs)
    except ProviderError as exc:
        raise UsageError(f"cannot load the provider database: {exc}") from exc

    settings = Settings(
        allow_adhoc=bool(chosen["allow_adhoc"]),
        max_probes=chosen["max_probes"],
        per_host=chosen["per_host"],
        probe_timeout=chosen["probe_timeout"],
        timeout_offset=chosen["timeout_offset"],
    )
    exporter = Exporter(
        targets,
        modules=loaded.modules,
        settings=settings,
        rules=rules,
        providers=providers,
        limiter=HostLimiter(settings.per_host),
        scrub=scrubber(passwords),
    )
    return exporter, chosen["listen"]


def serve(server: Any) -> int:
    """Serve until SIGTERM or SIGINT; exit code 0."""
    import signal

    class _Stop(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


def scrubber(secrets: Sequence[tuple[str, Sequence[str]]]) -> Callable[[str], str]:
    """Masks every form of every password in a text (``maildiag.redact``): for log lines.

    ``secrets``: each password with the logins it may go out with, for the encoded SASL PLAIN
    responses (the login stage chooses the login form; each one it may choose is here). Built at
    its first use, in one pattern: a file of thousands of targets starts without compiling
    thousands of patterns that only an internal error would need."""
    import threading

    lock = threading.Lock()
    built: list[Callable[[str], str]] = []

    def build() -> Callable[[str], str]:
        import base64

        from maildiag.redact import Redactor, echo_forms

        forms: set[str] = set()
        for password, logins in dict.fromkeys((p, tuple(ls)) for p, ls in secrets):
            forms.update(echo_forms(password))
            for login in dict.fromkeys(logins):
                for sasl in (
                    f"\0{login}\0{password}",
                    f"{login}\0{login}\0{password}",
                    f"{login}\0{password}",
                ):
                    encoded = base64.b64encode(sasl.encode("utf-8", "surrogateescape")).decode()
                    forms.update((encoded, encoded.rstrip("=")))
        redactor = Redactor(None)
        redactor.add(*forms)
        return redactor.reply

    def scrub(text: str) -> str:
        if not secrets:
            return text
        with lock:
            if not built:
                built.append(build())
        return built[0](text)

    return scrub


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
