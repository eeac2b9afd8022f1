"""The provider database as data: a provider's servers and login form, and the database that
finds a provider by address domain or MX host. ``providers.load_providers`` builds it from
rules/providers/*.yaml and Thunderbird's ISPDB (``ispdb``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from maildiag.models import Security, Service

if TYPE_CHECKING:
    from maildiag.address import Address

LoginForm = Literal["address", "localpart"]
LOGIN_FORMS: tuple[str, ...] = ("address", "localpart")
# how a mail program signs in: the account password, an app password, or an OAuth2 access token
AUTH_METHODS: tuple[str, ...] = ("password", "app_password", "oauth2")


class ProviderError(ValueError):
    """The provider database cannot be loaded; str() is one line naming the file."""


DOMAIN_PLACEHOLDER = "%EMAILDOMAIN%"  # in an ISPDB host name: the address's domain


@dataclass(frozen=True, slots=True)
class ServerSpec:
    host: str
    port: int
    security: Security
    login: LoginForm | None = None  # overrides the provider's login form for this server
    # an unusual login (ISPDB: "%EMAILLOCALPART%.%EMAILDOMAIN%"); wins over ``login``
    login_template: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "security": str(self.security)}

    def label(self) -> str:
        return f"{self.host}:{self.port}/{self.security}"


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    domains: tuple[str, ...]
    mx_patterns: tuple[str, ...]
    servers: Mapping[Service, tuple[ServerSpec, ...]]
    login: LoginForm
    custom_domain_login: LoginForm
    notes: Mapping[str, tuple[str, ...]]
    links: tuple[str, ...]
    custom_domain_servers: Mapping[Service, tuple[ServerSpec, ...]] = field(default_factory=dict)
    # how mail programs may sign in per service, preferred first (AUTH_METHODS); empty: unknown
    auth: Mapping[Service, tuple[str, ...]] = field(default_factory=dict)
    source_file: str = ""
    origin: str = "maildiag"  # "maildiag" (rules/providers/*.yaml) or "ispdb"

    def for_domain(self, domain: str) -> Provider:
        """This entry with ``%EMAILDOMAIN%`` in its host names filled with ``domain`` (A-labels)."""
        if not any(DOMAIN_PLACEHOLDER in s.host for specs in self.servers.values() for s in specs):
            return self
        servers = {
            service: tuple(
                dataclasses.replace(s, host=s.host.replace(DOMAIN_PLACEHOLDER, domain))
                for s in specs
            )
            for service, specs in self.servers.items()
        }
        return dataclasses.replace(self, servers=servers)

    def servers_for(self, custom_domain: bool) -> Mapping[Service, tuple[ServerSpec, ...]]:
        """The servers to use: custom domains may have their own (else the common ones)."""
        if custom_domain and self.custom_domain_servers:
            return self.custom_domain_servers
        return self.servers

    def _first(self, custom_domain: bool, service: Service | None) -> ServerSpec | None:
        if service is None or custom_domain:
            return None
        specs = self.servers_for(custom_domain).get(service, ())
        return specs[0] if specs else None

    def login_form(self, custom_domain: bool, service: Service | None = None) -> str:
        """``address``, ``localpart``, or ``other`` (an ISPDB login template)."""
        spec = self._first(custom_domain, service)
        if spec is not None and spec.login_template:
            return "other"
        if spec is not None and spec.login is not None:
            return spec.login
        return self.custom_domain_login if custom_domain else self.login

    def login_for(
        self, address: Address, custom_domain: bool, service: Service | None = None
    ) -> str:
        """The login name the provider expects for this address (and service, when it differs).

        ``custom_domain``: the address's domain is not one of ``domains`` but is hosted here.
        """
        spec = self._first(custom_domain, service)
        if spec is not None and spec.login_template:
            return (
                spec.login_template.replace("%EMAILADDRESS%", f"{address.local}@{address.domain}")
                .replace("%EMAILLOCALPART%", address.local)
                .replace("%EMAILDOMAIN%", address.domain)
            )
        if self.login_form(custom_domain, service) == "localpart":
            return address.local
        return f"{address.local}@{address.domain}"

    def matches_mx(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(_mx_match(pattern, host) for pattern in self.mx_patterns)

    def auth_for(self, service: Service) -> tuple[str, ...]:
        """How a mail program may sign in to this service, preferred first; () when unknown."""
        return tuple(self.auth.get(service, ()))

    def notes_in(self, lang: str) -> tuple[str, ...]:
        return self.notes.get(lang) or self.notes.get("en", ())


def _mx_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


class ProviderDb:
    """Providers indexed by address domain and searchable by MX host.

    ``providers``: the hand-written entries (a domain may belong to one of them only);
    ``ispdb``: Thunderbird's entries, each answering for the domains no hand-written entry claims.

    Read from the cache (``providers.load_providers``), an entry stays plain data (``as_data``)
    until something asks for it: a check of one address needs at most one of the ~180 entries,
    and building them all would cost more than reading them.
    """

    def __init__(self, providers: Sequence[Provider], ispdb: Sequence[Provider] = ()) -> None:
        self._own: list[Provider | dict[str, Any]] = list(providers)
        self._isp: list[Provider | dict[str, Any]] = list(ispdb)
        self._index()

    @classmethod
    def of_data(cls, own: Sequence[dict[str, Any]], isp: Sequence[dict[str, Any]]) -> ProviderDb:
        """The database of entries in their plain-data form, each built when first asked for."""
        db = cls.__new__(cls)
        db._own, db._isp = list(own), list(isp)
        db._index()
        return db

    def _index(self) -> None:
        self._own_domains = {d: i for i, p in enumerate(self._own) for d in _field(p, "domains")}
        self._ispdb_domains = {d: i for i, p in enumerate(self._isp) for d in _field(p, "domains")}
        self._own_ids = {_field(p, "id"): i for i, p in enumerate(self._own)}
        self._isp_ids = {_field(p, "id"): i for i, p in enumerate(self._isp)}

    @staticmethod
    def _entry(table: list[Provider | dict[str, Any]], i: int) -> Provider:
        entry = table[i]
        if isinstance(entry, dict):
            entry = table[i] = from_data(entry)
        return entry

    @property
    def ispdb(self) -> tuple[Provider, ...]:
        return tuple(self._entry(self._isp, i) for i in range(len(self._isp)))

    def __iter__(self) -> Iterator[Provider]:
        return iter([self._entry(self._own, i) for i in range(len(self._own))])

    def __len__(self) -> int:
        return len(self._own)

    def get(self, provider_id: str) -> Provider | None:
        if provider_id in self._own_ids:
            return self._entry(self._own, self._own_ids[provider_id])
        if provider_id in self._isp_ids:
            return self._entry(self._isp, self._isp_ids[provider_id])
        return None

    def _for(self, domain: str) -> Provider | None:
        """The entry answering for an address domain: a hand-written one, else the ISPDB's."""
        if domain in self._own_domains:
            return self._entry(self._own, self._own_domains[domain])
        if domain in self._ispdb_domains:
            return self._entry(self._isp, self._ispdb_domains[domain])
        return None

    def by_domain(self, domain: str) -> Provider | None:
        """The provider whose address domain this is (Unicode or A-label form), with its host
        names filled in for that domain."""
        domain = domain.lower().rstrip(".")
        if not domain.isascii():
            from maildiag.address import AddressError, to_ascii_host

            try:
                domain = to_ascii_host(domain)
            except AddressError:
                return None
        found = self._for(domain)
        return found.for_domain(domain) if found is not None else None

    def by_mx(self, host: str) -> Provider | None:
        """The provider hosting a domain whose MX is ``host``: an MX pattern of a hand-written
        entry (exact name or ``*.``), else, as Thunderbird does with its ISPDB, the entry for a
        parent domain of ``host`` that the ISPDB lists (mx1.isp.test → isp.test), longest first
        (a hand-written entry still wins for its own domains)."""
        for provider in self:
            if provider.matches_mx(host):
                return provider
        labels = host.lower().rstrip(".").split(".")
        for start in range(1, len(labels) - 1):
            parent = ".".join(labels[start:])
            if parent in self._ispdb_domains:
                return self._for(parent)
        return None


def _field(entry: Provider | dict[str, Any], name: str) -> Any:
    return entry[name] if isinstance(entry, dict) else getattr(entry, name)


def as_data(p: Provider) -> dict[str, Any]:
    """A provider as plain data (for marshal): every field, the enums by value."""

    def servers(table: Mapping[Service, tuple[ServerSpec, ...]]) -> dict[str, Any]:
        return {
            str(svc): [[s.host, s.port, str(s.security), s.login, s.login_template] for s in specs]
            for svc, specs in table.items()
        }

    return {
        "id": p.id,
        "name": p.name,
        "domains": list(p.domains),
        "mx_patterns": list(p.mx_patterns),
        "servers": servers(p.servers),
        "login": p.login,
        "custom_domain_login": p.custom_domain_login,
        "notes": {lang: list(notes) for lang, notes in p.notes.items()},
        "links": list(p.links),
        "custom_domain_servers": servers(p.custom_domain_servers),
        "auth": {str(svc): list(methods) for svc, methods in p.auth.items()},
        "source_file": p.source_file,
        "origin": p.origin,
    }


def from_data(d: dict[str, Any]) -> Provider:
    """The provider ``as_data`` gave."""

    def servers(table: dict[str, Any]) -> dict[Service, tuple[ServerSpec, ...]]:
        return {
            Service(svc): tuple(
                ServerSpec(host, int(port), Security(sec), login, template)
                for host, port, sec, login, template in specs
            )
            for svc, specs in table.items()
        }

    return Provider(
        id=d["id"],
        name=d["name"],
        domains=tuple(d["domains"]),
        mx_patterns=tuple(d["mx_patterns"]),
        servers=servers(d["servers"]),
        login=d["login"],
        custom_domain_login=d["custom_domain_login"],
        notes={lang: tuple(notes) for lang, notes in d["notes"].items()},
        links=tuple(d["links"]),
        custom_domain_servers=servers(d["custom_domain_servers"]),
        auth={Service(svc): tuple(methods) for svc, methods in d["auth"].items()},
        source_file=d["source_file"],
        origin=d["origin"],
    )
