"""A targets file (``maildiag check --config targets.yaml``): many mailboxes checked in one run.

The file::

    max_parallel: 4              # optional: targets checked at once (1-64, default 4)
    defaults:                    # optional: options every target inherits unless it sets them
      timeout: 10
      warn_days: 21
    targets:                     # required: one entry per mailbox
      - alice@example.test       # an address alone is a target with the defaults
      - mail.example.test        # a server, checked without a mailbox: HOST[:PORT][/MODE]
      - address: support@example.test
        name: support-smtp                  # optional: its name in reports and for the exporter
        smtp: smtp.example.test:465/ssl     # HOST[:PORT][/ssl|starttls|plain], like --smtp
        only: [smtp]                        # or "smtp,imap"
        login: support
        password_env: SUPPORT_PASSWORD      # the password itself never goes in the file
      - address: alice@gmail.test
        oauth2_token_env: ALICE_TOKEN       # or an OAuth2 access token (a target's own choice
                                            # of the two wins over the one in defaults)
        ca_file: private-ca.pem             # relative paths are relative to this file
    modules:                     # optional, for ``maildiag exporter``: options of ad-hoc probes
      smtps: {only: smtp, timeout: 5}       # the defaults' keys, except credentials
    exporter:                    # optional: settings of ``maildiag exporter`` (its options)
      allow_adhoc: true

A target's ``name`` (default: its address) is what ``maildiag exporter`` selects it by
(``/probe?target=NAME``); names are unique. ``modules`` and ``exporter`` are read only by the
exporter (``check --config`` validates and ignores them); with modules, ``targets`` may be left
out (an exporter of ad-hoc probes only). A module holds no ``password_env``: a scrape names the
host it goes to, and a password must never go to a host the file does not name.

The keys are the ``config`` names of the check options (``maildiag.options``): a target may hold
every option of one mailbox, ``defaults`` those that may be shared; each value goes through the
same parser as on the command line. A target's ``address`` may be a server ``HOST[:PORT][/MODE]``
(no ``@``), checked without a mailbox as ``maildiag check HOST`` does; the file's default
``password_env`` does not apply to it. Keys are checked strictly: an unknown key, a value of the
wrong type, a target without an address, a repeated key, two targets with one name (the name
is the address unless ``name`` says otherwise, so an address listed twice needs a name at least
once), or broken YAML raises
``ConfigError`` whose message is one line naming the file and line (``targets.yaml:12: unknown
key 'pasword_env' in target 2 (did you mean 'password_env'?)``), so the CLI prints it and exits 3
before anything runs. This module never touches the network.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maildiag.errors import UsageError
from maildiag.options import (
    CHECK,
    EXPORTER,
    Option,
    OptionError,
    Scope,
    conflict,
    is_server,
    parse_env_name,
)

MAX_CONFIG_BYTES = 1024 * 1024
MAX_TARGETS = 500
MAX_PARALLEL = 64
DEFAULT_PARALLEL = 4
# an exporter answers one target per scrape: its file may list a fleet
EXPORTER_MAX_BYTES = 16 * 1024 * 1024
EXPORTER_MAX_TARGETS = 50_000

TOP_KEYS = ("targets", "defaults", "max_parallel", "modules", "exporter")
# the options a targets file may hold, by their key there
TARGET_OPTIONS: dict[str, Option] = {
    o.config: o for o in CHECK.options if o.config is not None and o.scope is not Scope.RUN
}
DEFAULT_OPTIONS: dict[str, Option] = {
    key: o for key, o in TARGET_OPTIONS.items() if o.scope is Scope.SHARED
}
# what names a secret: an environment variable holding a password or token
CREDENTIAL_OPTIONS: dict[str, Option] = {
    key: o for key, o in DEFAULT_OPTIONS.items() if o.parse is parse_env_name
}
MODULE_OPTIONS: dict[str, Option] = {
    key: o for key, o in DEFAULT_OPTIONS.items() if key not in CREDENTIAL_OPTIONS
}
SERVE_OPTIONS: dict[str, Option] = {
    o.config: o for o in EXPORTER.options if o.config is not None and o.scope is Scope.SERVE
}


# where a target's login secret comes from: one of them per target (a target's own choice wins
# over the defaults'), and never from the command line
SECRET_SOURCES = ("password_env", "oauth2_token_env")


class ConfigError(UsageError):
    """The targets file cannot be used; str() is one line: ``FILE:LINE: problem``."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target of a targets file: its option values (parsed), defaults merged in.

    ``values`` holds only what the file says, by option name; the command line fills the rest
    (``check_values``). ``index`` is the 1-based position in ``targets``, ``line`` where the
    entry starts.
    """

    index: int
    line: int
    path: str
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.values["address"])

    @property
    def name(self) -> str:
        """What reports and the exporter call this target: its ``name``, else its address."""
        return str(self.values.get("name") or self.values["address"])

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def check_values(self, command_line: Mapping[str, Any]) -> dict[str, Any]:
        """The options of this target's check: the file's, then the command line's.

        Options of one mailbox (address, servers, login, sender) come only from the file, so
        one mailbox's login is never sent to another target's servers; the password or token
        source too (``password_env``, ``oauth2_token_env``, from the file or its defaults). The
        rest: the file's value when set, else the command line's.
        """
        out = {
            o.name: command_line.get(o.name)
            for o in CHECK.options
            if o.scope is not Scope.TARGET and o.name not in SECRET_SOURCES
        }
        out.update(self.values)
        return out


@dataclass(frozen=True, slots=True)
class TargetsConfig:
    targets: tuple[TargetSpec, ...]
    max_parallel: int = DEFAULT_PARALLEL
    # ad-hoc probes' options by module name: the module's over the defaults' (no credentials)
    modules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    serve: Mapping[str, Any] = field(default_factory=dict)  # ``exporter:``, by option name


def load_targets(path: str, *, exporter: bool = False) -> TargetsConfig:
    """The targets file, validated; raises ``ConfigError`` (one line) otherwise.

    ``exporter``: read for ``maildiag exporter``, which takes larger files and, when the file
    has modules, no targets at all."""
    max_bytes = EXPORTER_MAX_BYTES if exporter else MAX_CONFIG_BYTES
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: the config file is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the config file is not UTF-8 text") from exc
    return _Loader(path, text, exporter=exporter).load()


class _Loader:
    def __init__(self, path: str, text: str, *, exporter: bool = False) -> None:
        self.path = path
        self.text = text
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.exporter = exporter
        self.max_targets = EXPORTER_MAX_TARGETS if exporter else MAX_TARGETS

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
            raise ConfigError(f"{self.path}:{line}: bad YAML: {problem}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.path}: bad YAML: {' '.join(str(exc).split())}") from exc
        except RecursionError:
            # lists or mappings nested thousands deep: no config needs more than a few levels
            raise ConfigError(f"{self.path}: the config file is nested too deeply") from None
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
        return self.loader.construct_object(node, deep=True)

    def check_keys(
        self, items: list[tuple[str, Any, Any]], allowed: Mapping[str, Option], what: str
    ) -> None:
        for key, key_node, _ in items:
            if key in allowed:
                continue
            if what.startswith("module") and key in CREDENTIAL_OPTIONS:
                raise self.fail(
                    key_node,
                    f"'{key}' is not accepted in {what}: a scrape names the host an ad-hoc probe "
                    "goes to, so a module holds no credentials",
                )
            if key == "password":
                raise self.fail(
                    key_node,
                    f"'password' is not accepted in {what}: put the password in an environment "
                    "variable and name it with 'password_env'",
                )
            if key in ("oauth2_token", "token", "access_token"):
                raise self.fail(
                    key_node,
                    f"'{key}' is not accepted in {what}: put the OAuth2 access token in an "
                    "environment variable and name it with 'oauth2_token_env'",
                )
            if what == "defaults" and key in TARGET_OPTIONS:
                raise self.fail(key_node, f"'{key}' cannot be a default: it belongs in a target")
            if what.startswith("module") and key in TARGET_OPTIONS:
                raise self.fail(
                    key_node,
                    f"'{key}' cannot be in {what}: it belongs in a target (an ad-hoc probe's "
                    "server is the scrape's target=HOST[:PORT])",
                )
            hint = difflib.get_close_matches(key, list(allowed), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise self.fail(key_node, f"unknown key '{key}' in {what}{extra}")

    def values(self, node: Any, allowed: Mapping[str, Option], what: str) -> dict[str, Any]:
        """The option values of a mapping node, by option name, each parsed."""
        items = self.mapping(node, what)
        self.check_keys(items, allowed, what)
        return {allowed[key].name: self.value(allowed[key], value, what) for key, _, value in items}

    def value(self, option: Option, node: Any, what: str) -> Any:
        key = option.config
        if isinstance(node, self.yaml.SequenceNode) and option.name == "only":
            raw: Any = [self.scalar(item) for item in node.value]
        elif not isinstance(node, self.yaml.ScalarNode):
            raise self.fail(node, f"'{key}' in {what} must be a single value, not a {_kind(node)}")
        else:
            raw = self.scalar(node)
        if option.name == "ca_file" and isinstance(raw, str) and raw.strip():
            raw = os.path.join(self.base_dir, os.path.expanduser(raw.strip()))
        assert option.parse is not None
        try:
            return option.parse(raw)
        except OptionError as exc:
            raise self.fail(node, f"'{key}' in {what}: {exc}") from exc

    # structure ---------------------------------------------------------------------------

    def top(self, root: Any) -> TargetsConfig:
        yaml = self.yaml
        if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
            raise ConfigError(f"{self.path}:1: the file is empty: expected 'targets:' with a list")
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, "expected a mapping with a 'targets' list at the top level")
        items = self.mapping(root, "the top level")
        for key, key_node, _ in items:
            if key not in TOP_KEYS:
                hint = difflib.get_close_matches(key, TOP_KEYS, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.fail(key_node, f"unknown key '{key}' in the top level{extra}")
        by_key = {key: value for key, _, value in items}

        max_parallel = DEFAULT_PARALLEL
        if "max_parallel" in by_key:
            node = by_key["max_parallel"]
            value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(value, bool) or not isinstance(value, int):
                value = 0
            if not 1 <= value <= MAX_PARALLEL:
                raise self.fail(
                    node,
                    f"'max_parallel' must be a whole number from 1 to {MAX_PARALLEL}",
                )
            max_parallel = value

        defaults: dict[str, Any] = {}
        if "defaults" in by_key:
            defaults = self.values(by_key["defaults"], DEFAULT_OPTIONS, "defaults")
        modules = self.modules(by_key["modules"], defaults) if "modules" in by_key else {}
        serve = (
            self.values(by_key["exporter"], SERVE_OPTIONS, "exporter")
            if ("exporter" in by_key)
            else {}
        )

        if "targets" not in by_key:
            if self.exporter and modules:
                return TargetsConfig((), max_parallel, modules, serve)
            raise self.fail(root, "no 'targets' list: name at least one target")
        t_node = by_key["targets"]
        if not isinstance(t_node, yaml.SequenceNode) or not t_node.value:
            raise self.fail(t_node, "'targets' must be a list with at least one target")
        if len(t_node.value) > self.max_targets:
            count = len(t_node.value)
            raise self.fail(t_node, f"too many targets ({count}; at most {self.max_targets})")

        specs: list[TargetSpec] = []
        first_seen: dict[str, tuple[int, bool]] = {}
        for index, node in enumerate(t_node.value, start=1):
            spec = self.target(index, node, defaults)
            # one mailbox may be listed twice (two servers for it): the names tell them apart
            named = "name" in spec.values
            key = spec.values["name"] if named else _target_key(spec.address)
            if key in first_seen:
                other, other_named = first_seen[key]
                if named or other_named:
                    why = f"has the same name {key!r} as target {other}: give it another 'name'"
                else:
                    why = (
                        f"repeats the address {spec.address!r} of target {other}: "
                        "give it a 'name' of its own (or narrow one with 'only')"
                    )
                raise self.fail(node, f"target {index} {why}")
            first_seen[key] = (index, named)
            specs.append(spec)
        return TargetsConfig(tuple(specs), max_parallel, modules, serve)

    def target(self, index: int, node: Any, defaults: Mapping[str, Any]) -> TargetSpec:
        what = f"target {index}"
        if isinstance(node, self.yaml.ScalarNode):
            values = {"address": self.value(CHECK.option("address"), node, what)}
        elif isinstance(node, self.yaml.MappingNode):
            values = self.values(node, TARGET_OPTIONS, what)
            if "address" not in values:
                raise self.fail(node, f"{what} has no 'address'")
        else:
            raise self.fail(node, f"{what} must be an address or a mapping of options")
        inherited = dict(defaults)
        if is_server(values["address"]) or any(values.get(key) for key in SECRET_SOURCES):
            # a server is checked without a login; a target's own way of logging in replaces
            # the file's default one
            for key in SECRET_SOURCES:
                inherited.pop(key, None)
        merged = {**inherited, **values}
        problem = conflict(merged, lambda o: f"'{o.config}'")
        if problem:
            raise self.fail(node, f"{what}: {problem}")
        return TargetSpec(index, node.start_mark.line + 1, self.path, merged)

    def modules(self, node: Any, defaults: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``modules:``: each module's options over the defaults' (without credentials)."""
        shared = {
            key: value
            for key, value in defaults.items()
            if key not in {o.name for o in CREDENTIAL_OPTIONS.values()}
        }
        out: dict[str, dict[str, Any]] = {}
        for name, key_node, value in self.mapping(node, "modules"):
            if not _MODULE_NAME.match(name):
                raise self.fail(
                    key_node,
                    f"module name {name!r}: use letters, digits, '_', '-' and '.' only",
                )
            what = f"module '{name}'"
            merged = {**shared, **self.values(value, MODULE_OPTIONS, what)}
            problem = conflict(merged, lambda o: f"'{o.config}'")
            if problem:
                raise self.fail(value, f"{what}: {problem}")
            out[name] = merged
        return out


_MODULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def _target_key(text: str) -> str:
    """What makes two targets the same: the address (domain in A-labels), or the server."""
    if is_server(text):
        return text.strip().lower()
    from maildiag.address import parse_address

    return parse_address(text).ascii.lower()


def _kind(node: Any) -> str:
    name = type(node).__name__
    return {"MappingNode": "mapping", "SequenceNode": "list"}.get(name, "value")
