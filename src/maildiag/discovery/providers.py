"""The provider database: rules/providers/*.yaml, one provider per file, validated on load.

A provider entry says which address domains belong to it, which MX host patterns mark a custom
domain hosted there, its IMAP/POP3/SMTP servers (first = preferred), the login form, and notes in
English and Russian. ``load_providers()`` reads the built-in files and then each extra rules
directory's ``providers/`` folder (an extra entry with the same ``id`` replaces the built-in one).
Any problem — unknown key, bad host or port, a domain claimed by two providers — is a
``ProviderError`` whose message names the file, so ``maildiag rules lint`` and the CLI can print
it as one line.

Below these hand-written entries sits Thunderbird's ISP database, converted by
``scripts/ispdb_import.py`` into rules/providers/ispdb/ispdb.json (``maildiag.discovery.ispdb``):
its entries (``origin`` "ispdb", ids ``ispdb:<file>``) answer for every domain no hand-written
entry claims. Iterating a ``ProviderDb`` gives the hand-written entries; ``ProviderDb.ispdb`` the
others; ``by_domain`` and ``by_mx`` search both, hand-written first.

File format (see rules/providers/yandex.yaml)::

    id: yandex                      # [a-z0-9-]+, unique
    name: Yandex Mail
    domains: [yandex.ru, ya.ru]     # address domains (lower case, A-labels or Unicode)
    mx: [mx.yandex.net]             # MX host patterns; "*." matches one or more labels
    login: localpart                # address | localpart, for addresses in `domains`
    custom_domain_login: address    # for a custom domain found through `mx` (default: address)
    servers:
      imap: [{host: imap.yandex.ru, port: 993, security: ssl}]
      smtp: [{host: smtp.yandex.ru, port: 465, security: ssl, login: address}]  # per-server form
    custom_domain_servers: {...}    # optional: other servers for custom domains (Zoho "pro" hosts)
    auth:                           # optional: how mail programs may sign in, per service,
      imap: [app_password, oauth2]  #   preferred first: password | app_password | oauth2
      smtp: [app_password, oauth2]  #   (oauth2: an OAuth2 token over SASL XOAUTH2/OAUTHBEARER)
    notes: {en: [...], ru: [...]}
    links: [https://...]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maildiag.discovery.providerdb import (
    AUTH_METHODS,
    LOGIN_FORMS,
    LoginForm,
    Provider,
    ProviderDb,
    ProviderError,
    ServerSpec,
    as_data,
)
from maildiag.lang import LANGS
from maildiag.models import Security, Service

if TYPE_CHECKING:
    pass

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TOP_KEYS = {
    "id",
    "name",
    "domains",
    "mx",
    "login",
    "custom_domain_login",
    "servers",
    "custom_domain_servers",
    "auth",
    "notes",
    "links",
}
_REQUIRED_KEYS = {"id", "name", "servers", "login", "notes", "links"}
_SERVER_KEYS = {"host", "port", "security", "login"}
_MAX_FILE = 256 * 1024


# --- loading -------------------------------------------------------------------------------


def builtin_dir() -> Path:
    """rules/providers as shipped: inside the wheel (maildiag/rules/providers) or the checkout
    (the rule base's directory, found the same way, without importlib.resources)."""
    from maildiag.rulebase.files import builtin_rules_dir

    return builtin_rules_dir() / "providers"


# bump when the cached structure (``providerdb.as_data``) changes
CACHE_FORMAT = 1


def load_providers(
    extra_dirs: Sequence[str | Path] = (), *, ispdb: bool = True, cache: bool = True
) -> ProviderDb:
    """Built-in providers, then ``DIR/providers/*.yaml`` for each extra rules directory, over
    Thunderbird's ISPDB (left out with ``ispdb=False``).

    Raises ``ProviderError`` (one line naming the file) on any invalid entry. What a load
    validated is kept in the cache directory (``maildiag.datacache``), keyed by the files'
    paths, sizes and mtimes and this code's: while none changes, a run reads that instead of
    parsing YAML (``cache=False`` always reads the files).
    """
    from maildiag import datacache

    layers: list[list[Path]] = [sorted(builtin_dir().glob("*.yaml"))]
    for extra in extra_dirs:
        base = Path(extra)
        folder = base / "providers" if (base / "providers").is_dir() else None
        layers.append(sorted(folder.glob("*.yaml")) if folder else [])
    ispdb_file = builtin_dir() / "ispdb" / "ispdb.json" if ispdb else None
    path = stamp = None
    if cache:
        stamp = _stamp(layers, ispdb_file)
        key = "\0".join([str(builtin_dir()), *map(str, extra_dirs), str(ispdb)])
        path = datacache.cache_file("providers", key)
    if path is not None:
        cached = datacache.read(path, stamp)
        if cached is not None:
            try:
                return _from_cache(cached)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                datacache.drop(path)  # not what we write: rebuilt below, rewritten
    db = _load_files(layers, ispdb_file)
    if path is not None:
        datacache.write(path, stamp, _as_cache(db))
    return db


def _stamp(layers: Sequence[Sequence[Path]], ispdb_file: Path | None) -> list[Any]:
    """What a cached database was made from: this code, and every file with its size and mtime."""
    import os
    import sys

    from maildiag.datacache import file_stamp

    here = os.path.dirname(os.path.abspath(__file__))
    code = [
        file_stamp(os.path.join(here, n)) for n in ("providers.py", "providerdb.py", "ispdb.py")
    ]
    files = [[[str(f), *file_stamp(str(f))] for f in layer] for layer in layers]
    if ispdb_file is not None:
        files.append([[str(ispdb_file), *file_stamp(str(ispdb_file))]])
    return [CACHE_FORMAT, sys.version, code, files]


def _as_cache(db: ProviderDb) -> dict[str, Any]:
    return {"providers": [as_data(p) for p in db], "ispdb": [as_data(p) for p in db.ispdb]}


def _from_cache(data: dict[str, Any]) -> ProviderDb:
    own, isp = data["providers"], data["ispdb"]
    if not all(isinstance(d, dict) for d in (*own, *isp)):
        raise TypeError("not the cached structure")
    return ProviderDb.of_data(own, isp)


def _load_files(layers: Sequence[Sequence[Path]], ispdb_file: Path | None) -> ProviderDb:
    by_id: dict[str, Provider] = {}
    for files in layers:
        layer: dict[str, Provider] = {}
        for path in files:
            provider = _load_file(path)
            if provider.id in layer:
                raise ProviderError(
                    f"{path}: provider id {provider.id!r} is already defined in "
                    f"{layer[provider.id].source_file}"
                )
            layer[provider.id] = provider
        by_id.update(layer)  # a later layer replaces a built-in entry with the same id
    providers = list(by_id.values())
    _check_unique(providers)
    if ispdb_file is None:
        return ProviderDb(providers)
    from maildiag.discovery.ispdb import load_ispdb

    return ProviderDb(providers, load_ispdb(ispdb_file))


def _check_unique(providers: Sequence[Provider]) -> None:
    owner: dict[str, Provider] = {}
    for provider in providers:
        for domain in provider.domains:
            if domain in owner:
                other = owner[domain]
                raise ProviderError(
                    f"{provider.source_file}: domain {domain!r} is also claimed by provider "
                    f"{other.id!r} ({other.source_file})"
                )
            owner[domain] = provider
    patterns: dict[str, Provider] = {}
    for provider in providers:
        for pattern in provider.mx_patterns:
            if pattern in patterns:
                other = patterns[pattern]
                raise ProviderError(
                    f"{provider.source_file}: MX pattern {pattern!r} is also claimed by provider "
                    f"{other.id!r} ({other.source_file})"
                )
            patterns[pattern] = provider


def _load_file(path: Path) -> Provider:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProviderError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > _MAX_FILE:
        raise ProviderError(f"{path}: larger than {_MAX_FILE // 1024} KiB")
    try:
        data = _yaml_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProviderError(f"{path}: not UTF-8 text") from None
    except _YamlProblem as exc:
        raise ProviderError(f"{path}: {exc}") from None
    try:
        return _build(data, str(path))
    except _Invalid as exc:
        raise ProviderError(f"{path}: {exc}") from None


class _Invalid(Exception):
    pass


class _YamlProblem(Exception):
    pass


def _yaml_load(text: str) -> Any:
    import yaml

    base: type[yaml.SafeLoader] = getattr(
        yaml, "CSafeLoader", yaml.SafeLoader
    )  # libyaml: 5x faster

    class StrictLoader(base):  # type: ignore[valid-type,misc]
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                line = key_node.start_mark.line + 1
                raise _YamlProblem(f"line {line}: duplicate key {key!r}")
            result[key] = loader.construct_object(value_node, deep=True)
        return result

    StrictLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
        construct_mapping,
    )
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # lists or mappings nested hundreds deep
        raise _YamlProblem("invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _YamlProblem(f"{where}invalid YAML: {problem}") from None


def _build(data: Any, source: str) -> Provider:
    pid = _identity(data)
    where = f"provider {pid!r}"
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise _Invalid(f"{where}: name must be a non-empty string")
    domains, mx = _names(data, where)
    servers = _servers(data["servers"], f"{where}: servers")
    if not servers:
        raise _Invalid(f"{where}: servers must name at least one service")
    custom_servers = (
        _servers(data["custom_domain_servers"], f"{where}: custom_domain_servers")
        if "custom_domain_servers" in data
        else {}
    )
    if custom_servers and not mx:
        raise _Invalid(f"{where}: custom_domain_servers without mx patterns can never be used")
    return Provider(
        id=pid,
        name=name.strip(),
        domains=domains,
        mx_patterns=mx,
        servers=servers,
        login=_login(data["login"], f"{where}: login"),
        custom_domain_login=_login(
            data.get("custom_domain_login", "address"), f"{where}: custom_domain_login"
        ),
        notes=_notes(data["notes"], where),
        links=_links(data["links"], where),
        custom_domain_servers=custom_servers,
        auth=_auth(data["auth"], servers, f"{where}: auth") if "auth" in data else {},
        source_file=source,
    )


def _identity(data: Any) -> str:
    """The entry's id, after checking its keys."""
    if not isinstance(data, dict):
        raise _Invalid("expected a mapping with id, name, servers, ... at the top level")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise _Invalid(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})"
        )
    missing = sorted(_REQUIRED_KEYS - set(data))
    if missing:
        raise _Invalid(f"missing key(s) {', '.join(missing)}")
    pid = data["id"]
    if not isinstance(pid, str) or not _ID_RE.match(pid):
        raise _Invalid(f"id {pid!r} must be lower-case letters, digits and '-'")
    return pid


def _names(data: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The address domains and the MX patterns: at least one of them, none twice."""
    domains = tuple(
        _domain(d, f"{where}: domains")
        for d in _str_list(data.get("domains", []), f"{where}: domains")
    )
    mx = tuple(_mx_pattern(p, where) for p in _str_list(data.get("mx", []), f"{where}: mx"))
    if not domains and not mx:
        raise _Invalid(f"{where}: needs at least one of domains or mx")
    for label, values in (("domains", domains), ("mx", mx)):
        if len(set(values)) != len(values):
            raise _Invalid(f"{where}: {label} lists a name twice")
    return domains, mx


def _notes(notes: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(notes, dict):
        raise _Invalid(f"{where}: notes must be a mapping with en and ru lists")
    extra_langs = sorted(set(map(str, notes)) - set(LANGS))
    if extra_langs:
        raise _Invalid(f"{where}: notes: unknown language(s) {', '.join(extra_langs)}")
    parsed: dict[str, tuple[str, ...]] = {}
    for lang in LANGS:
        items = _str_list(notes.get(lang), f"{where}: notes.{lang}")
        if not items:
            raise _Invalid(f"{where}: notes.{lang} must list at least one note")
        parsed[lang] = tuple(i.strip() for i in items)
    if len(parsed["en"]) != len(parsed["ru"]):
        raise _Invalid(f"{where}: notes.en and notes.ru must have the same number of notes")
    return parsed


def _links(value: Any, where: str) -> tuple[str, ...]:
    links = tuple(_str_list(value, f"{where}: links"))
    if not links:
        raise _Invalid(f"{where}: links must cite at least one help page of the provider")
    for link in links:
        if not re.match(r"^https://[^\s/]+\.[^\s/]+(/\S*)?$", link):
            raise _Invalid(f"{where}: link {link!r} is not an https:// URL")
    return links


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Invalid(f"{where} must be a list of non-empty strings")
    return list(value)


def _auth(value: Any, servers: Mapping[Service, Any], where: str) -> dict[Service, tuple[str, ...]]:
    """``auth``: for services the entry has servers for, the sign-in methods, none twice."""
    if not isinstance(value, dict) or not value:
        raise _Invalid(f"{where} must map smtp/imap/pop3 to lists of sign-in methods")
    out: dict[Service, tuple[str, ...]] = {}
    for key, methods in value.items():
        try:
            service = Service(str(key))
        except ValueError:
            raise _Invalid(f"{where}: unknown service {key!r} (use smtp, imap, pop3)") from None
        if service not in servers:
            raise _Invalid(f"{where}.{service}: the entry lists no {service} server")
        listed = _str_list(methods, f"{where}.{service}")
        if not listed:
            raise _Invalid(f"{where}.{service} must list at least one sign-in method")
        unknown = [m for m in listed if m not in AUTH_METHODS]
        if unknown:
            raise _Invalid(
                f"{where}.{service}: unknown sign-in method {unknown[0]!r} "
                f"(use {', '.join(AUTH_METHODS)})"
            )
        if len(set(listed)) != len(listed):
            raise _Invalid(f"{where}.{service} lists a method twice")
        out[service] = tuple(listed)
    return {s: out[s] for s in Service if s in out}


def _login(value: Any, where: str) -> LoginForm:
    if value not in LOGIN_FORMS:
        raise _Invalid(f"{where} must be one of {', '.join(LOGIN_FORMS)}, not {value!r}")
    return value  # type: ignore[no-any-return]


def valid_hostname(host: str) -> bool:
    """A DNS host name (A-labels, at least two labels) or an IP address literal."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    return len(host) <= 253 and len(labels) >= 2 and all(_LABEL_RE.match(lb) for lb in labels)


def _domain(value: str, where: str) -> str:
    from maildiag.address import AddressError, to_ascii_host

    if value != value.strip().lower():
        raise _Invalid(f"{where}: {value!r} must be lower case without spaces")
    try:
        ascii_name = to_ascii_host(value)
    except AddressError:
        raise _Invalid(f"{where}: {value!r} is not a valid domain name") from None
    if not valid_hostname(ascii_name) or _is_ip(ascii_name):
        raise _Invalid(f"{where}: {value!r} is not a valid domain name")
    return ascii_name


def _mx_pattern(value: str, where: str) -> str:
    name = value[2:] if value.startswith("*.") else value
    if value != value.lower() or not valid_hostname(name) or _is_ip(name):
        raise _Invalid(f"{where}: mx pattern {value!r} must be a host name, optionally '*.' + name")
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _servers(value: Any, where: str) -> dict[Service, tuple[ServerSpec, ...]]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must map smtp/imap/pop3 to lists of servers")
    out: dict[Service, tuple[ServerSpec, ...]] = {}
    for key, specs in value.items():
        try:
            service = Service(str(key))
        except ValueError:
            raise _Invalid(f"{where}: unknown service {key!r} (use smtp, imap, pop3)") from None
        if not isinstance(specs, list) or not specs:
            raise _Invalid(f"{where}.{service}: must be a non-empty list of servers")
        parsed = tuple(_server(s, f"{where}.{service}") for s in specs)
        if len(set(parsed)) != len(parsed):
            raise _Invalid(f"{where}.{service}: a server is listed twice")
        out[service] = parsed
    # keep a stable order: smtp, imap, pop3
    return {s: out[s] for s in Service if s in out}


def _server(value: Any, where: str) -> ServerSpec:
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: each server is a mapping with host, port, security")
    unknown = sorted(set(map(str, value)) - _SERVER_KEYS)
    if unknown:
        raise _Invalid(f"{where}: unknown server key(s) {', '.join(unknown)}")
    host, port, security = value.get("host"), value.get("port"), value.get("security")
    if not isinstance(host, str) or host != host.lower() or not valid_hostname(host):
        raise _Invalid(f"{where}: host {host!r} is not a lower-case host name or IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise _Invalid(f"{where}: port {port!r} for {host} must be a number from 1 to 65535")
    if security not in ("ssl", "starttls", "plain"):
        raise _Invalid(f"{where}: security {security!r} for {host} must be ssl, starttls or plain")
    login = _login(value["login"], f"{where}: login") if "login" in value else None
    return ServerSpec(host, port, Security(security), login)
