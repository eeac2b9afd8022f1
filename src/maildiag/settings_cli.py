"""``maildiag settings ADDRESS``: the table a person copies into their mail program.

For IMAP, POP3 and SMTP: server, port, security and login, then the provider's notes (from
rules/providers, in the chosen language). A domain in the provider database is answered from it
without touching the network ("certain"); any other domain goes through discovery and the answer
says how sure it is: published by the domain (SRV, autoconfig), via its MX records, or an
unverified guess.

Exit codes: 0 servers found, 2 nothing found, 3 bad input (one line on stderr).
JSON: ``{"schema": "maildiag.settings/1", "address", "discovery", "certainty", "servers",
"notes", ...}`` where each server is ``{service, host, port, security, login, login_form, source}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from maildiag.models import Discovery, Finding, Security, Service, Source
from maildiag.terminal import safe

SETTINGS_SCHEMA = "maildiag.settings/1"
TABLE_ORDER: tuple[Service, ...] = (Service.IMAP, Service.POP3, Service.SMTP)

CERTAINTY: dict[Source, str] = {
    Source.PROVIDER: "certain",
    Source.SRV: "published",
    Source.AUTOCONFIG: "published",
    Source.MX: "via_mx",
    Source.GUESS: "guess",
    Source.EXPLICIT: "certain",
}

# Interface labels (facts and column names, not advice: advice lives in rules/).
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "heading": "Mail program settings for {address}",
        "provider": "Provider: {name}",
        "service": "Service",
        "server": "Server",
        "port": "Port",
        "security": "Security",
        "login": "Login",
        "localpart": "Login {login!r} is the part of the address before the @.",
        "also": "Also possible",
        "notes": "Notes",
        "links": "Help",
        "nothing": "No mail servers found for {domain}.",
        "certain": "How sure: certain (maildiag's provider database).",
        "published_srv": "How sure: published by the domain (DNS SRV records).",
        "published_autoconfig": "How sure: published by the domain (autoconfig file {url}).",
        "via_mx": "How sure: via MX — the domain's mail is hosted at {name}, "
        "whose settings these are.",
        "guess": "How sure: unverified guess — conventional server names that exist in DNS; "
        "the ports are the standard ones.",
        "ssl": "SSL/TLS",
        "starttls": "STARTTLS",
        "plain": "none",
        "auto": "detect",
    },
    "ru": {
        "heading": "Настройки почтовой программы для {address}",
        "provider": "Провайдер: {name}",
        "service": "Протокол",
        "server": "Сервер",
        "port": "Порт",
        "security": "Защита",
        "login": "Логин",
        "localpart": "Логин {login!r} — часть адреса до @.",
        "also": "Также возможно",
        "notes": "Примечания",
        "links": "Справка",
        "nothing": "Почтовые серверы для {domain} не найдены.",
        "certain": "Насколько точно: точно (база провайдеров maildiag).",
        "published_srv": "Насколько точно: опубликовано доменом (DNS-записи SRV).",
        "published_autoconfig": "Насколько точно: опубликовано доменом (файл autoconfig {url}).",
        "via_mx": "Насколько точно: по MX — почта домена размещена у {name}, это его настройки.",
        "guess": "Насколько точно: непроверенная догадка — обычные имена серверов, которые есть "
        "в DNS; порты стандартные.",
        "ssl": "SSL/TLS",
        "starttls": "STARTTLS",
        "plain": "нет",
        "auto": "определить",
    },
}


@dataclass(frozen=True, slots=True)
class _Row:
    service: Service
    host: str
    port: int
    security: Security
    login: str
    login_form: str  # address | localpart | other
    source: Source | None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": str(self.service),
            "host": self.host,
            "port": self.port,
            "security": str(self.security),
            "login": self.login,
            "login_form": self.login_form,
            "source": str(self.source) if self.source else None,
        }


def run_settings(
    address: str,
    *,
    as_json: bool,
    lang: str | None,
    resolver: str | None,
    timeout: float,
    rules_dirs: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
    autoconfig_port: int | None = None,
    ca_file: str | None = None,
) -> int:
    """Print the settings for ``address``; 0 found, 2 nothing found, 3 bad input."""
    from maildiag.address import AddressError, parse_address
    from maildiag.discovery.providers import ProviderError, load_providers
    from maildiag.dnsclient import Dns
    from maildiag.lang import LANGS, default_lang

    out = out or sys.stdout
    err = err or sys.stderr
    lang = lang or default_lang()
    if lang not in LANGS:
        print(f"maildiag: --lang must be one of {', '.join(LANGS)}, not {lang!r}", file=err)
        return 3
    if not timeout > 0:
        print("maildiag: --timeout must be a positive number of seconds", file=err)
        return 3
    try:
        addr = parse_address(address)
    except AddressError as exc:
        print(f"maildiag: {exc}", file=err)
        return 3
    try:
        dns = Dns(resolver, timeout=timeout)
    except ValueError as exc:
        print(f"maildiag: {exc}", file=err)
        return 3
    try:
        db = load_providers(rules_dirs)
    except ProviderError as exc:
        print(f"maildiag: {exc}", file=err)
        return 3

    problems: list[dict[str, Any]] = []
    alternatives: list[_Row] = []
    autoconfig_url = ""
    provider = db.by_domain(addr.domain)
    if provider is not None:  # certain, and no network needed
        discovery = Discovery(Source.PROVIDER, provider.id, f"provider database: {provider.id}")
        rows: list[_Row] = []
        for service in TABLE_ORDER:
            specs = provider.servers.get(service, ())
            for i, spec in enumerate(specs):
                row = _Row(
                    service,
                    spec.host,
                    spec.port,
                    spec.security,
                    provider.login_for(addr, False, service),
                    provider.login_form(False, service),
                    Source.PROVIDER,
                )
                (rows if i == 0 else alternatives).append(row)
    else:
        from maildiag.discovery import discover

        found = discover(
            addr,
            dns=dns,
            timeout=timeout,
            providers=db,
            ca_file=ca_file,
            autoconfig_port=autoconfig_port,
        )
        discovery, provider = found.discovery, found.provider
        custom = bool(found.dns.data.get("custom_domain"))
        by_service = {t.service: t for t in found.targets}
        rows = []
        for service in TABLE_ORDER:
            target = by_service.get(service)
            if target is None:
                continue
            # without a word from the source, the full address is what most servers want
            login = found.logins.get(service) or f"{addr.local}@{addr.domain}"
            rows.append(
                _Row(
                    service,
                    target.host,
                    target.port,
                    target.security,
                    login,
                    _form(login, addr),
                    target.source,
                )
            )
        if provider is not None and custom:
            servers = provider.servers_for(custom_domain=True)
            for row in [r for r in rows if r.source is Source.MX]:
                for spec in servers.get(row.service, ())[1:]:
                    alternatives.append(
                        _Row(
                            row.service,
                            spec.host,
                            spec.port,
                            spec.security,
                            row.login,
                            row.login_form,
                            Source.MX,
                        )
                    )
        autoconfig_url = str(found.dns.data.get("autoconfig", {}).get("used", ""))
        problems = [
            {"signal": p.signal, "text": p.text, "params": dict(p.params)}
            for p in found.dns.problems
        ]

    findings = _explain_problems(problems, lang, rules_dirs) if problems and not rows else []
    certainty = CERTAINTY.get(discovery.source) if rows and discovery.source else None
    notes = list(provider.notes_in(lang)) if provider is not None else []
    links = list(provider.links) if provider is not None else []
    if as_json:
        doc: dict[str, Any] = {
            "schema": SETTINGS_SCHEMA,
            "address": addr.original,
            "discovery": discovery.to_json()
            if rows
            else {"source": None, "provider": discovery.provider},
            "certainty": certainty,
            "servers": [r.to_json() for r in rows],
            "alternatives": [r.to_json() for r in alternatives],
            "notes": notes,
            "links": links,
        }
        if provider is not None:
            doc["provider_name"] = provider.name
        if problems:
            doc["problems"] = problems
            doc["findings"] = [f.to_json() for f in findings]
        json.dump(doc, out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        _render_text(
            out,
            lang,
            addr.original,
            addr.domain,
            rows,
            alternatives,
            discovery,
            provider.name if provider else "",
            certainty,
            autoconfig_url,
            notes,
            links,
            findings,
        )
    return 0 if rows else 2


def _explain_problems(
    problems: Sequence[Mapping[str, Any]], lang: str, rules_dirs: Sequence[str]
) -> list[Finding]:
    """The rule base's findings for discovery's problems (the one diagnosis path)."""
    from maildiag.rulebase import RuleBase

    rules = RuleBase.load(rules_dirs)
    findings: list[Finding] = []
    for p in problems:
        matches = rules.match(p["text"], signal=p["signal"]) or rules.match(
            p["text"], signal="unexplained"
        )
        if matches:
            findings.append(
                rules.finding(
                    matches[0], lang=lang, check="dns", params={"text": p["text"], **p["params"]}
                )
            )
    return findings


def _form(login: str, addr: Any) -> str:
    if login == addr.local:
        return "localpart"
    if "@" in login and login.lower() in (
        f"{addr.local}@{addr.domain}".lower(),
        addr.ascii.lower(),
    ):
        return "address"
    return "other"


def _render_text(
    out: TextIO,
    lang: str,
    address: str,
    domain: str,
    rows: Sequence[_Row],
    alternatives: Sequence[_Row],
    discovery: Discovery,
    provider_name: str,
    certainty: str | None,
    autoconfig_url: str,
    notes: Sequence[str],
    links: Sequence[str],
    findings: Sequence[Finding],
) -> None:
    t = _LABELS[lang]
    lines = [t["heading"].format(address=address)]
    if not rows:
        lines.append(t["nothing"].format(domain=domain))
        for finding in findings:  # why nothing was found, in the rule base's words
            lines.append(f"- {finding.title}")
            lines.extend(f"  {n}. {step}" for n, step in enumerate(finding.steps, 1))
        out.write(safe("\n".join(dict.fromkeys(lines)) + "\n"))
        return
    if provider_name:
        lines.append(t["provider"].format(name=provider_name))
    if certainty == "certain":
        lines.append(t["certain"])
    elif certainty == "published":
        if discovery.source is Source.AUTOCONFIG:
            lines.append(t["published_autoconfig"].format(url=autoconfig_url))
        else:
            lines.append(t["published_srv"])
    elif certainty == "via_mx":
        lines.append(t["via_mx"].format(name=provider_name))
    elif certainty == "guess":
        lines.append(t["guess"])
    lines.append("")
    header = [t["service"], t["server"], t["port"], t["security"], t["login"]]
    table = [header] + [
        [r.service.name, r.host, str(r.port), t[str(r.security)], r.login] for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
    lines.append("")
    for login in dict.fromkeys(r.login for r in rows if r.login_form == "localpart"):
        lines.append(t["localpart"].format(login=login))
    if alternatives:
        also = ", ".join(
            f"{r.service.name} {r.host} {r.port} {t[str(r.security)]}" for r in alternatives
        )
        lines.append(f"{t['also']}: {also}")
    if notes:
        lines.append("")
        lines.append(f"{t['notes']}:")
        lines.extend(f"  - {note}" for note in notes)
    if links:
        lines.append("")
        lines.append(f"{t['links']}: " + "  ".join(links))
    # a login from an autoconfig file is a stranger's text: shown, never obeyed
    out.write(safe("\n".join(lines) + "\n"))
