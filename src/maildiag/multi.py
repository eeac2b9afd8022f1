"""Many targets from one YAML file (``maildiag check --config targets.yaml``), run concurrently.

The file::

    max_parallel: 4              # optional: targets checked at once (1-64, default 4)
    defaults:                    # optional: options every target inherits unless it sets them
      timeout: 10
      warn_days: 21
      crit_days: 7
    targets:                     # required: one entry per mailbox
      - alice@example.test       # an address alone is a target with the defaults
      - address: support@example.test
        smtp: smtp.example.test:465/ssl     # HOST[:PORT][/ssl|starttls|plain], like --smtp
        only: [smtp]                        # or "smtp,imap"
        login: support
        password_env: SUPPORT_PASSWORD      # the password itself never goes in the file
        from: noreply@example.test
        ca_file: private-ca.pem             # relative paths are relative to this file
        resolver: 127.0.0.1:5353
        time_server: ntp.example.test
        clock: false                        # like --no-clock
        timeout: 5
        warn_days: 30
        crit_days: 10

Keys are checked strictly: an unknown key, a value of the wrong type, a target without an
address, a repeated key or address, or broken YAML raises ``ConfigError`` whose message is one
line naming the file and line (``targets.yaml:12: unknown key 'pasword_env' in target 2 (did
you mean 'password_env'?)``), so the CLI prints it and exits 3 before anything runs.

``run_many`` runs a caller-supplied ``run_one(spec) -> Report`` for every target under a global
cap and returns a ``MultiReport``: reports in file order, status the worst status, exit code the
worst exit code. This module never touches the network itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maildiag.address import AddressError, parse_address
from maildiag.models import ExitCode, Report, Service, Status, status_rank

if TYPE_CHECKING:
    from maildiag.checking import CheckOptions

MULTI_SCHEMA = "maildiag.multi/1"

MAX_CONFIG_BYTES = 1024 * 1024
MAX_TARGETS = 500
MAX_PARALLEL = 64
DEFAULT_PARALLEL = 4

TOP_KEYS = ("targets", "defaults", "max_parallel")
# Options that make sense for every target alike.
DEFAULT_KEYS = (
    "only",
    "password_env",
    "ca_file",
    "resolver",
    "time_server",
    "clock",
    "timeout",
    "warn_days",
    "crit_days",
)
# Options that belong to one mailbox.
TARGET_ONLY_KEYS = ("address", "smtp", "imap", "pop3", "login", "from")
TARGET_KEYS = TARGET_ONLY_KEYS + DEFAULT_KEYS

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ConfigError(ValueError):
    """The config file cannot be used; str() is one line: ``FILE:LINE: problem``."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target of a config file, with the file's defaults already merged in.

    ``None`` means "not set in the file": the command line's value (or the built-in default)
    applies. Server specs stay as typed (``HOST[:PORT][/MODE]``, already validated) so the CLI
    parses them exactly as it parses ``--smtp``. ``index`` is the 1-based position in
    ``targets``, ``line`` where the entry starts.
    """

    address: str
    index: int
    line: int
    path: str = ""
    smtp: str | None = None
    imap: str | None = None
    pop3: str | None = None
    only: frozenset[Service] | None = None
    login: str | None = None
    password_env: str | None = None
    sender: str | None = None  # the 'from' key
    ca_file: str | None = None  # absolute (relative paths are resolved against the file)
    resolver: str | None = None
    time_server: str | None = None
    clock: bool | None = None
    timeout: float | None = None
    warn_days: int | None = None
    crit_days: int | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def to_options(self, base: CheckOptions) -> CheckOptions:
        """The ``check`` options for this target: ``base`` (the command line) overlaid.

        Run-wide settings (format, language, rules, transcript, --fail-on) come from ``base``.
        Per-mailbox settings (address, servers, login, sender, password source) come only from
        the file, never from ``base``, so one mailbox's password or login is never sent to
        another target's servers. Everything else: the file's value when set, else ``base``'s.
        """
        changes: dict[str, Any] = {
            "address": self.address,
            "smtp": self.smtp,
            "imap": self.imap,
            "pop3": self.pop3,
            "login": self.login,
            "sender": self.sender,
            "password_env": self.password_env,
            "ask_password": False,
            "config_file": None,
        }
        if self.only is not None:
            changes["only"] = ",".join(str(s) for s in Service if s in self.only)
        if self.clock is not None:
            changes["no_clock"] = not self.clock
        for name in ("ca_file", "resolver", "time_server", "timeout", "warn_days", "crit_days"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        return dataclasses.replace(base, **changes)

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The password from ``password_env``; ``None`` without one (checks needing it skip).

        Raises ``ConfigError`` (naming file and line, never the value) when the variable is
        unset or empty: a monitoring job must not silently stop testing the login.
        """
        if self.password_env is None:
            return None
        env = os.environ if environ is None else environ
        value = env.get(self.password_env)
        if not value:
            state = "is not set" if value is None else "is empty"
            raise ConfigError(
                f"{self.where}: target {self.index}: environment variable "
                f"{self.password_env} (password_env) {state}"
            )
        return value


@dataclass(frozen=True, slots=True)
class TargetsConfig:
    targets: tuple[TargetSpec, ...]
    max_parallel: int = DEFAULT_PARALLEL


@dataclass(frozen=True, slots=True)
class MultiReport:
    """The combined result of a ``--config`` run: one ``Report`` per target, in file order."""

    reports: tuple[Report, ...]
    status: Status
    exit_code: ExitCode
    duration_ms: int = 0

    @classmethod
    def of(cls, reports: Sequence[Report], duration_ms: int = 0) -> MultiReport:
        """Status: the worst report status; exit code: the worst report exit code."""
        if not reports:
            raise ValueError("a MultiReport needs at least one report")
        status = Status.OK
        for report in reports:
            if status_rank(report.status) > status_rank(status):
                status = report.status
        exit_code = ExitCode(max(int(r.exit_code) for r in reports))
        return cls(tuple(reports), status, exit_code, duration_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": MULTI_SCHEMA,
            "status": str(self.status),
            "exit_code": int(self.exit_code),
            "reports": [r.to_json() for r in self.reports],
        }


def run_many(
    specs: Sequence[TargetSpec],
    run_one: Callable[[TargetSpec], Report],
    max_parallel: int = DEFAULT_PARALLEL,
) -> MultiReport:
    """Run ``run_one`` for every spec, at most ``max_parallel`` at once; reports in spec order.

    ``run_one`` is expected to turn every problem of a target into its report; if it raises
    anyway, the remaining targets are cancelled and the exception propagates (the CLI's error
    shell turns it into one line and exit 3).
    """
    if not specs:
        raise ValueError("run_many needs at least one target")
    workers = max(1, min(int(max_parallel), len(specs)))
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maildiag-target")
    try:
        futures = [pool.submit(run_one, spec) for spec in specs]
        reports = [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return MultiReport.of(reports, int((time.monotonic() - started) * 1000))


# --- the loader ----------------------------------------------------------------------------


class _Bad(Exception):
    """A value problem; the caller adds file, line and context."""


def load_targets(path: str) -> list[TargetSpec]:
    """The targets of a config file, validated; raises ``ConfigError`` (one line) otherwise."""
    return list(load_config(path).targets)


def load_config(path: str) -> TargetsConfig:
    """The whole config file: targets plus ``max_parallel``; raises ``ConfigError``."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: the config file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the config file is not UTF-8 text") from None
    return _Loader(path, text).load()


class _Loader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.base_dir = os.path.dirname(os.path.abspath(path))

    def fail(self, node: Any, message: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(f"{self.path}:{line}: {message}")

    def load(self) -> TargetsConfig:
        import yaml

        loader = yaml.SafeLoader(self.text)
        self.yaml = yaml
        self.loader = loader
        try:
            root = loader.get_single_node()
            return self.top(root)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
            raise ConfigError(f"{self.path}:{line}: bad YAML: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.path}: bad YAML: {' '.join(str(exc).split())}") from None
        finally:
            loader.dispose()

    # nodes -------------------------------------------------------------------------------

    def mapping(self, node: Any, what: str) -> list[tuple[str, Any, Any]]:
        """(key, key node, value node) of a mapping node, keys checked to be unique names.

        ``<<: *anchor`` merge keys are resolved; a key written twice is an error, while a key
        that overrides a merged one is not (YAML merge semantics).
        """
        if not isinstance(node, self.yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of options, not a {_kind(node)}")
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.key(key_node, what)
            if key in seen:
                raise self.fail(key_node, f"duplicate key '{key}' in {what}")
            seen.add(key)
        self.loader.flatten_mapping(node)
        items: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            items[self.key(key_node, what)] = (key_node, value_node)
        return [(key, key_node, value) for key, (key_node, value) in items.items()]

    def key(self, node: Any, what: str) -> str:
        key = self.scalar(node)
        if not isinstance(key, str):
            raise self.fail(node, f"keys must be names, not {key!r} (in {what})")
        return key

    def scalar(self, node: Any) -> Any:
        if not isinstance(node, self.yaml.ScalarNode):
            return node  # the caller reports a non-scalar where a scalar belongs
        return self.loader.construct_object(node, deep=True)

    def check_keys(
        self, items: list[tuple[str, Any, Any]], allowed: Sequence[str], what: str
    ) -> None:
        for key, key_node, _ in items:
            if key in allowed:
                continue
            if key == "password":
                raise self.fail(
                    key_node,
                    f"'password' is not accepted in {what}: put the password in an environment "
                    "variable and name it with 'password_env'",
                )
            if what == "defaults" and key in TARGET_ONLY_KEYS:
                raise self.fail(key_node, f"'{key}' cannot be a default: it belongs in a target")
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise self.fail(key_node, f"unknown key '{key}' in {what}{extra}")

    # structure ---------------------------------------------------------------------------

    def top(self, root: Any) -> TargetsConfig:
        yaml = self.yaml
        if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
            raise ConfigError(f"{self.path}:1: the file is empty: expected 'targets:' with a list")
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, "expected a mapping with a 'targets' list at the top level")
        items = self.mapping(root, "the top level")
        self.check_keys(items, TOP_KEYS, "the top level")
        by_key = {key: (key_node, value) for key, key_node, value in items}

        max_parallel = DEFAULT_PARALLEL
        if "max_parallel" in by_key:
            _, node = by_key["max_parallel"]
            max_parallel = self.value(node, "max_parallel", "the top level", _as_parallel)

        defaults: dict[str, tuple[Any, Any]] = {}
        if "defaults" in by_key:
            _, node = by_key["defaults"]
            d_items = self.mapping(node, "defaults")
            self.check_keys(d_items, DEFAULT_KEYS, "defaults")
            defaults = {
                key: (value, self.convert(key, value, "defaults")) for key, _, value in d_items
            }

        if "targets" not in by_key:
            raise self.fail(root, "no 'targets' list: name at least one target")
        _, t_node = by_key["targets"]
        if not isinstance(t_node, yaml.SequenceNode) or not t_node.value:
            raise self.fail(t_node, "'targets' must be a list with at least one target")
        if len(t_node.value) > MAX_TARGETS:
            count = len(t_node.value)
            raise self.fail(t_node, f"too many targets ({count}; at most {MAX_TARGETS})")

        specs: list[TargetSpec] = []
        first_seen: dict[str, int] = {}
        for index, node in enumerate(t_node.value, start=1):
            spec = self.target(index, node, defaults)
            key = parse_address(spec.address).ascii.lower()
            if key in first_seen:
                raise self.fail(
                    node,
                    f"target {index} repeats the address {spec.address!r} of target "
                    f"{first_seen[key]}: one target per address (narrow it with 'only')",
                )
            first_seen[key] = index
            specs.append(spec)
        return TargetsConfig(tuple(specs), max_parallel)

    def target(self, index: int, node: Any, defaults: dict[str, tuple[Any, Any]]) -> TargetSpec:
        yaml = self.yaml
        what = f"target {index}"
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            if not isinstance(value, str) or not value.strip():
                raise self.fail(node, f"{what} must be an address or a mapping of options")
            values: dict[str, tuple[Any, Any]] = {"address": (node, self.address(node, what))}
        else:
            if not isinstance(node, yaml.MappingNode):
                raise self.fail(node, f"{what} must be an address or a mapping of options")
            items = self.mapping(node, what)
            self.check_keys(items, TARGET_KEYS, what)
            values = {key: (value, self.convert(key, value, what)) for key, _, value in items}
            if "address" not in values:
                raise self.fail(node, f"{what} has no 'address'")
        merged = {**defaults, **values}
        got = {key: converted for key, (_, converted) in merged.items()}

        only: frozenset[Service] | None = got.get("only")
        for service in Service:
            if only is not None and str(service) in got and service not in only:
                raise self.fail(
                    merged[str(service)][0],
                    f"{what} names a {service} server but 'only' leaves {service} out",
                )
        warn, crit = got.get("warn_days"), got.get("crit_days")
        if warn is not None and crit is not None and warn < crit:
            where = merged["warn_days"][0] if "warn_days" in values else node
            raise self.fail(where, f"{what}: warn_days ({warn}) is below crit_days ({crit})")
        return TargetSpec(
            address=got["address"],
            index=index,
            line=node.start_mark.line + 1,
            path=self.path,
            smtp=got.get("smtp"),
            imap=got.get("imap"),
            pop3=got.get("pop3"),
            only=only,
            login=got.get("login"),
            password_env=got.get("password_env"),
            sender=got.get("from"),
            ca_file=got.get("ca_file"),
            resolver=got.get("resolver"),
            time_server=got.get("time_server"),
            clock=got.get("clock"),
            timeout=got.get("timeout"),
            warn_days=warn,
            crit_days=crit,
        )

    # values ------------------------------------------------------------------------------

    def value(self, node: Any, key: str, what: str, convert: Callable[[Any], Any]) -> Any:
        if not isinstance(node, self.yaml.ScalarNode):
            raise self.fail(node, f"'{key}' in {what} must be a single value, not a {_kind(node)}")
        try:
            return convert(self.scalar(node))
        except _Bad as exc:
            raise self.fail(node, f"'{key}' in {what} {exc}") from None

    def address(self, node: Any, what: str) -> str:
        value = self.scalar(node)
        if not isinstance(value, str):
            raise self.fail(node, f"'address' in {what} must be a mail address, not {value!r}")
        try:
            parse_address(value)
        except AddressError as exc:
            raise self.fail(node, f"{what}: {exc}") from None
        return value.strip()

    def convert(self, key: str, node: Any, what: str) -> Any:
        if key == "address":
            return self.address(node, what)
        if key in ("smtp", "imap", "pop3"):
            service = Service(key)
            return self.value(node, key, what, lambda v: _as_server(service, v))
        if key == "only":
            if isinstance(node, self.yaml.SequenceNode):
                raw: Any = [self.value(item, key, what, _as_text) for item in node.value]
            else:
                raw = self.value(node, key, what, lambda v: v)
            try:
                return _as_only(raw)
            except _Bad as exc:
                raise self.fail(node, f"'{key}' in {what} {exc}") from None
        if key == "ca_file":
            return self.value(node, key, what, self._as_ca_file)
        converters: dict[str, Callable[[Any], Any]] = {
            "login": _as_text,
            "from": _as_sender,
            "password_env": _as_env_name,
            "resolver": _as_resolver,
            "time_server": _as_time_server,
            "clock": _as_bool,
            "timeout": _as_timeout,
            "warn_days": _as_days,
            "crit_days": _as_days,
        }
        return self.value(node, key, what, converters[key])

    def _as_ca_file(self, value: Any) -> str:
        text = _as_text(value)
        full = os.path.join(self.base_dir, os.path.expanduser(text))
        if not os.path.isfile(full):
            raise _Bad(f"names {text!r}, which is not a readable file")
        return full


def _kind(node: Any) -> str:
    name = type(node).__name__
    return {"MappingNode": "mapping", "SequenceNode": "list"}.get(name, "value")


def _as_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be a non-empty text, not {value!r}")
    return value.strip()


def _as_sender(value: Any) -> str:
    text = _as_text(value)
    try:
        parse_address(text)
    except AddressError as exc:
        raise _Bad(f"must be a mail address: {exc}") from None
    return text


def _as_env_name(value: Any) -> str:
    text = _as_text(value)
    if not _ENV_NAME.match(text):
        raise _Bad(
            f"must be the name of an environment variable (like MAIL_PASSWORD), not {text!r}"
        )
    return text


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, not {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"must be a number, not {value!r}")
    return float(value)


def _as_timeout(value: Any) -> float:
    seconds = _number(value)
    if not 0 < seconds <= 3600:
        raise _Bad(f"must be a number of seconds above 0 and at most 3600, not {value!r}")
    return seconds


def _as_days(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3650:
        raise _Bad(f"must be a whole number of days from 0 to 3650, not {value!r}")
    return value


def _as_parallel(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL:
        raise _Bad(f"must be a whole number from 1 to {MAX_PARALLEL}, not {value!r}")
    return value


def _as_only(value: Any) -> frozenset[Service]:
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, list):
        names = value
    else:
        raise _Bad(f"must be a list of services (smtp, imap, pop3), not {value!r}")
    services = set()
    for name in names:
        try:
            services.add(Service(str(name).lower()))
        except ValueError:
            raise _Bad(f"names an unknown service {name!r} (expected smtp, imap, pop3)") from None
    if not services:
        raise _Bad("must name at least one service (smtp, imap, pop3)")
    return frozenset(services)


def _as_server(service: Service, value: Any) -> str:
    from maildiag.checking import parse_server
    from maildiag.errors import UsageError

    text = _as_text(value)
    try:
        parse_server(text, service)  # the very parser behind --smtp/--imap/--pop3
    except (UsageError, ValueError) as exc:
        message = str(exc).removeprefix(f"--{service} {text}: ")
        raise _Bad(f"must be HOST[:PORT][/ssl|starttls|plain]: {message}") from None
    return text


def _as_resolver(value: Any) -> str:
    from maildiag.dnsclient import parse_server

    text = _as_text(value)
    try:
        parse_server(text)
    except ValueError:
        raise _Bad(f"must be IP[:PORT] of a DNS server, not {text!r}") from None
    return text


def _as_time_server(value: Any) -> str:
    text = _as_text(value)
    # the same test as --time-server: HOST or HOST:PORT (an IPv6 literal has no port here)
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host.strip() or (sep and not (port.isdigit() and 0 < int(port) < 65536)):
        raise _Bad(f"must be HOST[:PORT], not {text!r}")
    return text
