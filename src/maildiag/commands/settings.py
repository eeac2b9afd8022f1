"""``maildiag settings ADDRESS``: the table a person copies into their mail program.

For IMAP, POP3 and SMTP: server, port, security and login, then the provider's notes (from
rules/providers, in the chosen language). A domain in the provider database (hand-written
entries, then Thunderbird's ISPDB shipped with maildiag) is answered from it without touching the
network ("certain"); any other domain goes through discovery and the answer says, per server,
where it came from and how sure it is: published by the domain (SRV, autoconfig, Autodiscover),
Thunderbird's ISPDB online, via its MX records, or a guess (one whose probe got the server's
greeting, or an unverified name). The words live in rules/ui-settings.yaml.

Exit codes: 0 servers found, 2 nothing found, 3 bad input (``UsageError``: one line on stderr).
JSON: ``{"schema": "maildiag.settings/1", "address", "discovery", "certainty", "servers",
"alternatives", "notes", "links", ...}`` where each server is ``{service, host, port, security,
login, login_form, source, certainty, auth}`` (``auth``: how a mail program may sign in there,
preferred first — ``password``, ``app_password``, ``oauth2`` — from the provider database, or
null when it does not say); with a provider entry also ``provider_name``,
``provider_origin`` (``maildiag`` or ``ispdb``) and, for a hand-written entry that differs from
the ISPDB, ``ispdb_differences`` (``{what, maildiag, ispdb, ispdb_entry}``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from maildiag.errors import ExitCode, UsageError
from maildiag.models import (
    CERTAINTY,
    Discovery,
    Finding,
    Observation,
    Security,
    Service,
    Source,
)
from maildiag.terminal import safe, unicode_ok

if TYPE_CHECKING:
    from maildiag.address import Address
    from maildiag.discovery import DiscoveryResult
    from maildiag.discovery.providerdb import Provider, ProviderDb
    from maildiag.options import Command
    from maildiag.rulebase import RuleBase

SETTINGS_SCHEMA = "maildiag.settings/1"
TABLE_ORDER: tuple[Service, ...] = (Service.IMAP, Service.POP3, Service.SMTP)


@dataclass(frozen=True, slots=True)
class _Row:
    service: Service
    host: str
    port: int
    security: Security
    login: str
    login_form: str  # address | localpart | other
    source: Source | None
    certainty: str = ""
    auth: tuple[str, ...] = ()  # sign-in methods the provider accepts here, preferred first

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "host": self.host,
            "port": self.port,
            "security": str(self.security),
            "login": self.login,
            "login_form": self.login_form,
            "source": str(self.source) if self.source else None,
            "certainty": self.certainty or None,
            "auth": list(self.auth) or None,
        }


@dataclass
class _Answer:
    """What the table shows, wherever it came from."""

    discovery: Discovery
    provider: Provider | None
    rows: list[_Row] = field(default_factory=list)
    alternatives: list[_Row] = field(default_factory=list)
    urls: dict[Source, str] = field(default_factory=dict)  # the document each source read
    problems: list[dict[str, Any]] = field(default_factory=list)
    dns: Observation | None = None  # discovery's dns check, whose problems say why


def main(command: Command, raw: Mapping[str, Any]) -> int:
    values = command.checked(raw)
    if not values.get("address"):
        raise UsageError("Missing argument 'ADDRESS'")
    return run_settings(
        values["address"],
        as_json=bool(values.get("json")),
        lang=values.get("lang"),
        resolver=values.get("resolver"),
        timeout=values.get("timeout") or command.option("timeout").default,
        rules_dirs=tuple(values.get("rules") or ()),
    )


def run_settings(
    address: str,
    *,
    as_json: bool,
    lang: str | None,
    resolver: str | None,
    timeout: float,
    rules_dirs: Sequence[str] = (),
    out: TextIO | None = None,
    port_map: Mapping[int, int] | None = None,
    ca_file: str | None = None,
    providers: ProviderDb | None = None,
) -> int:
    """Print the settings for ``address``: ``ExitCode.OK`` found, ``FAIL`` nothing found;
    ``UsageError`` for an address that is none or a provider database or rule base that cannot
    be loaded (``--lang`` and ``--timeout`` are the options' to check).

    ``providers``: the provider database (default: loaded from the package and ``rules_dirs``);
    ``port_map``, ``ca_file``: passed to discovery (tests on loopback).
    """
    from maildiag.discovery.providerdb import ProviderError
    from maildiag.discovery.providers import load_providers
    from maildiag.dnsclient import Dns
    from maildiag.lang import default_lang

    out = out or sys.stdout
    lang = lang or default_lang()
    try:
        addr = _parse(address)
        dns = Dns(resolver, timeout=timeout)
        db = providers if providers is not None else load_providers(rules_dirs)
    except (ValueError, ProviderError) as exc:  # AddressError is a ValueError
        raise UsageError(str(exc)) from exc

    home = db.by_domain(addr.domain)
    if home is not None:  # certain, and no network needed
        answer = _from_provider(addr, home)
    else:
        from maildiag.discovery import discover

        found = discover(
            addr, dns=dns, timeout=timeout, providers=db, ca_file=ca_file, port_map=port_map
        )
        answer = _from_discovery(addr, found)
    from maildiag.rulebase import RuleBaseError

    explain = bool(answer.problems and not answer.rows)
    try:
        rules = _rules(rules_dirs) if explain or not as_json else None
    except RuleBaseError as exc:
        raise UsageError(f"cannot load the rule base: {exc}") from exc
    findings: list[Finding] = []
    if rules is not None and explain and answer.dns is not None:
        from maildiag.diagnose import diagnose_one

        # the check's own path: the same findings `check` gives for the same dns problems
        provider = answer.provider.id if answer.provider is not None else None
        findings = list(diagnose_one(answer.dns, rules, lang=lang, provider=provider).findings)
    if as_json or rules is None:
        json.dump(
            _json(addr, answer, db, lang, findings),
            out,
            ensure_ascii=not unicode_ok(out),  # \u escapes: valid JSON in any encoding
            indent=2,
        )
        out.write("\n")
    else:
        # a login from an autoconfig file is a stranger's text: shown, never obeyed
        out.write(safe(_Text(rules, lang).render(addr, answer, findings)))
    return ExitCode.OK if answer.rows else ExitCode.FAIL


def _parse(address: str) -> Address:
    from maildiag.address import parse_address

    return parse_address(address)


def _rules(rules_dirs: Sequence[str]) -> RuleBase:
    from maildiag.rulebase import RuleBase

    return RuleBase.load(rules_dirs)


# --- the answer ------------------------------------------------------------------------------


def _from_provider(addr: Address, provider: Provider) -> _Answer:
    discovery = Discovery(Source.PROVIDER, provider.id, f"provider database: {provider.id}")
    answer = _Answer(discovery, provider)
    for service in TABLE_ORDER:
        for i, spec in enumerate(provider.servers.get(service, ())):
            row = _Row(
                service,
                spec.host,
                spec.port,
                spec.security,
                provider.login_for(addr, False, service),
                provider.login_form(False, service),
                Source.PROVIDER,
                "certain",
                provider.auth_for(service),
            )
            (answer.rows if i == 0 else answer.alternatives).append(row)
    return answer


def _from_discovery(addr: Address, found: DiscoveryResult) -> _Answer:
    answer = _Answer(found.discovery, found.provider)
    by_service = {t.service: t for t in found.targets}
    for service in TABLE_ORDER:
        target = by_service.get(service)
        if target is None:
            continue
        # without a word from the source, the full address is what most servers want
        login = found.logins.get(service) or f"{addr.local}@{addr.domain}"
        certainty = found.certainty.get(service, "")
        answer.rows.append(
            _Row(
                service,
                target.host,
                target.port,
                target.security,
                login,
                _form(login, addr),
                target.source,
                certainty,
                _provider_auth(found.provider, service, target.host),
            )
        )
    provider = found.provider
    if provider is not None and found.dns.data.get("custom_domain"):
        servers = provider.servers_for(custom_domain=True)
        for row in [r for r in answer.rows if r.source in (Source.MX, Source.AUTODISCOVER)]:
            for spec in servers.get(row.service, ())[1:]:
                answer.alternatives.append(
                    _Row(
                        row.service,
                        spec.host,
                        spec.port,
                        spec.security,
                        row.login,
                        row.login_form,
                        row.source,
                        row.certainty,
                        provider.auth_for(row.service),
                    )
                )
    answer.urls = _urls(found.dns.data)
    answer.problems = [
        {"signal": p.signal, "text": p.text, "params": dict(p.params)} for p in found.dns.problems
    ]
    answer.dns = found.dns
    return answer


def _provider_auth(provider: Provider | None, service: Service, host: str) -> tuple[str, ...]:
    """The provider's sign-in methods for a server discovery found, when it is the provider's."""
    if provider is None:
        return ()
    hosts = {
        spec.host
        for servers in (provider.servers, provider.custom_domain_servers)
        for spec in servers.get(service, ())
    }
    return provider.auth_for(service) if host.lower() in hosts else ()


def _urls(data: Mapping[str, Any]) -> dict[Source, str]:
    autodiscover = data.get("autodiscover") or {}
    pox = autodiscover.get("pox") or {}
    online = autodiscover.get("exchange_online") or {}
    return {
        Source.AUTOCONFIG: str((data.get("autoconfig") or {}).get("used", "")),
        Source.ISPDB: str((data.get("ispdb") or {}).get("url", "")),
        Source.AUTODISCOVER: str(
            pox.get("url", "") if pox.get("result") == "ok" else online.get("url", "")
        ),
    }


def _form(login: str, addr: Address) -> str:
    if login == addr.local:
        return "localpart"
    if "@" in login and login.lower() in (
        f"{addr.local}@{addr.domain}".lower(),
        addr.ascii.lower(),
    ):
        return "address"
    return "other"


# --- JSON ------------------------------------------------------------------------------------


def _json(
    addr: Address, answer: _Answer, db: ProviderDb, lang: str, findings: Sequence[Finding]
) -> dict[str, Any]:
    discovery = answer.discovery
    rows = answer.rows
    provider = answer.provider
    doc: dict[str, Any] = {
        "schema": SETTINGS_SCHEMA,
        "address": addr.original,
        "discovery": discovery.to_json()
        if rows
        else {"source": None, "provider": discovery.provider},
        "certainty": CERTAINTY.get(discovery.source) if rows and discovery.source else None,
        "servers": [r.to_json() for r in rows],
        "alternatives": [r.to_json() for r in answer.alternatives],
        "notes": list(provider.notes_in(lang)) if provider is not None else [],
        "links": list(provider.links) if provider is not None else [],
    }
    if provider is not None:
        from maildiag.discovery.ispdb import differences

        doc["provider_name"] = provider.name
        doc["provider_origin"] = provider.origin
        diffs = differences(provider, db)
        if diffs:
            doc["ispdb_differences"] = diffs
    if answer.problems:
        doc["problems"] = answer.problems
        doc["findings"] = [f.to_json() for f in findings]
    return doc


# --- text ------------------------------------------------------------------------------------


class _Text:
    def __init__(self, rules: RuleBase, lang: str) -> None:
        self.rules, self.lang = rules, lang

    def t(self, key: str, **params: Any) -> str:
        return self.rules.ui_text(f"settings.{key}", self.lang, **params)

    def render(self, addr: Address, answer: _Answer, findings: Sequence[Finding]) -> str:
        lines = [self.t("heading", address=addr.original)]
        if not answer.rows:
            lines.append(self.t("nothing", domain=addr.domain))
            for finding in findings:  # why nothing was found, in the rule base's words
                lines.append(f"- {finding.title}")
                lines.extend(f"  {n}. {step}" for n, step in enumerate(finding.steps, 1))
            return "\n".join(dict.fromkeys(lines)) + "\n"
        provider = answer.provider
        if provider is not None:
            lines.append(self.t("provider", name=provider.name))
        lines.extend(self.how_sure(answer))
        lines.append("")
        lines.extend(self.table(answer.rows))
        lines.append("")
        for login in dict.fromkeys(r.login for r in answer.rows if r.login_form == "localpart"):
            lines.append(self.t("localpart", login=login))
        if answer.alternatives:
            also = ", ".join(
                f"{r.service.name} {r.host} {r.port} {self.t('security.' + str(r.security))}"
                for r in answer.alternatives
            )
            lines.append(f"{self.t('also')}: {also}")
        lines.extend(self.notes(provider))
        return "\n".join(lines) + "\n"

    def how_sure(self, answer: _Answer) -> list[str]:
        """One line per source among the servers shown, in the table's order."""
        out: list[str] = []
        for row in answer.rows:
            out.append(self._how(row, answer))
        return list(dict.fromkeys(out))

    def _how(self, row: _Row, answer: _Answer) -> str:
        source = row.source
        provider = answer.provider
        if source is Source.PROVIDER and provider is not None and provider.origin == "ispdb":
            return self.t("how.provider_ispdb")
        if source is Source.GUESS:
            hosts = ", ".join(
                dict.fromkeys(r.host for r in answer.rows if r.certainty == "answered")
            )
            key = "how.answered" if row.certainty == "answered" else "how.resolves"
            return self.t(key, hosts=hosts)
        if source is Source.MX:
            return self.t("how.mx", name=provider.name if provider else "?")
        if source is None:
            return ""
        return self.t(f"how.{source}", url=answer.urls.get(source, ""))

    def table(self, rows: Sequence[_Row]) -> list[str]:
        keys = ["service", "server", "port", "security", "login"]
        with_auth = any(r.auth for r in rows)  # the column only when the provider says
        if with_auth:
            keys.append("sign_in")
        header = [self.t(k) for k in keys]
        cells = [header] + [
            [r.service.name, r.host, str(r.port), self.t(f"security.{r.security}"), r.login]
            + ([", ".join(self.t(f"auth.{m}") for m in r.auth)] if with_auth else [])
            for r in rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        return [
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ]

    def notes(self, provider: Provider | None) -> list[str]:
        if provider is None:
            return []
        lines: list[str] = []
        notes = provider.notes_in(self.lang)
        if notes:
            lines.extend(["", f"{self.t('notes')}:"])
            lines.extend(f"  - {note}" for note in notes)
        if provider.links:
            lines.extend(["", f"{self.t('links')}: " + "  ".join(provider.links)])
        return lines
