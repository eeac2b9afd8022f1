"""The provider database (rules/providers): schema, uniqueness, well-formed servers, notes in en
and ru, a cited help page for every entry, and load errors that name the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from maildiag.address import parse_address
from maildiag.discovery.providerdb import ProviderDb, ProviderError
from maildiag.discovery.providers import builtin_dir, load_providers, valid_hostname
from maildiag.models import Security, Service

REQUIRED = {
    "yandex",
    "gmail",
    "google-workspace",
    "outlook",
    "microsoft365",
    "mailru",
    "rambler",
    "icloud",
    "yahoo",
    "aol",
    "gmx",
    "webde",
    "zoho",
    "fastmail",
    "proton-bridge",
}


@pytest.fixture(scope="module")
def db() -> ProviderDb:
    return load_providers()


def test_size_and_required_providers(db: ProviderDb) -> None:
    assert len(db) >= 20
    assert {p.id for p in db} >= REQUIRED


def test_every_file_is_one_valid_provider_and_cites_its_help_page() -> None:
    files = sorted(builtin_dir().glob("*.yaml"))
    assert len(files) >= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        assert re.search(r"https://\S+", comments), f"{path.name}: no help page cited in a comment"
        assert path.stem == re.search(r"^id: (\S+)$", text, re.M).group(1), path.name  # type: ignore[union-attr]


def test_no_domain_or_mx_pattern_claimed_twice(db: ProviderDb) -> None:
    domains = [d for p in db for d in p.domains]
    patterns = [m for p in db for m in p.mx_patterns]
    assert len(domains) == len(set(domains))
    assert len(patterns) == len(set(patterns))
    for provider in db:
        for domain in provider.domains:
            assert db.by_domain(domain) is provider
        for pattern in provider.mx_patterns:
            host = pattern.replace("*.", "mx1.")
            assert db.by_mx(host) is provider, pattern


def test_hosts_ports_security_are_well_formed(db: ProviderDb) -> None:
    for provider in db:
        for table in (provider.servers, provider.custom_domain_servers):
            for service, specs in table.items():
                assert isinstance(service, Service)
                assert specs, provider.id
                for spec in specs:
                    assert valid_hostname(spec.host), (provider.id, spec.host)
                    assert spec.host == spec.host.lower()
                    assert 0 < spec.port < 65536
                    assert spec.security in (Security.SSL, Security.STARTTLS, Security.PLAIN)
                    # the well-known ports mean what they say
                    if spec.port in (465, 993, 995):
                        assert spec.security is Security.SSL, (provider.id, spec)
                    if spec.port in (587, 143, 110):
                        assert spec.security is Security.STARTTLS, (provider.id, spec)
        assert provider.login in ("address", "localpart")
        assert provider.custom_domain_login in ("address", "localpart")


def test_notes_in_english_and_russian(db: ProviderDb) -> None:
    cyrillic = re.compile("[а-яё]", re.I)
    for provider in db:
        en, ru = provider.notes["en"], provider.notes["ru"]
        assert en and ru and len(en) == len(ru), provider.id
        assert all(not cyrillic.search(n) for n in en), provider.id
        assert all(cyrillic.search(n) for n in ru), provider.id
        assert provider.links and all(link.startswith("https://") for link in provider.links)
        assert provider.notes_in("ru") == ru and provider.notes_in("de") == en


def test_yandex_entry(db: ProviderDb) -> None:
    yandex = db.get("yandex")
    assert yandex is not None
    assert {
        "yandex.ru",
        "yandex.com",
        "yandex.by",
        "yandex.kz",
        "yandex.ua",
        "ya.ru",
        "narod.ru",
    } <= set(yandex.domains)
    assert db.by_mx("mx.yandex.net") is yandex
    servers = {s: (v[0].host, v[0].port, v[0].security) for s, v in yandex.servers.items()}
    assert servers == {
        Service.IMAP: ("imap.yandex.ru", 993, Security.SSL),
        Service.POP3: ("pop.yandex.ru", 995, Security.SSL),
        Service.SMTP: ("smtp.yandex.ru", 465, Security.SSL),
    }
    assert yandex.login_for(parse_address("ivan@yandex.ru"), custom_domain=False) == "ivan"
    assert (
        yandex.login_for(parse_address("ivan@firma.test"), custom_domain=True) == "ivan@firma.test"
    )


def test_mailru_domains_and_login(db: ProviderDb) -> None:
    for domain in ("mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru"):
        provider = db.by_domain(domain)
        assert provider is not None and provider.id == "mailru"
    mailru = db.get("mailru")
    assert mailru is not None
    assert mailru.login_for(parse_address("a@bk.ru"), custom_domain=False) == "a@bk.ru"


def test_icloud_login_differs_by_service(db: ProviderDb) -> None:
    icloud = db.get("icloud")
    assert icloud is not None
    address = parse_address("emily@icloud.com")
    assert icloud.login_for(address, False, Service.IMAP) == "emily"
    assert icloud.login_for(address, False, Service.SMTP) == "emily@icloud.com"
    assert Service.POP3 not in icloud.servers


def test_mx_patterns_match_whole_labels() -> None:
    db = load_providers(ispdb=False)  # the patterns alone, without the ISPDB's parent domains
    google = db.get("google-workspace")
    assert db.by_mx("alt1.aspmx.l.google.com") is google
    assert db.by_mx("ASPMX.L.GOOGLE.COM.") is google
    assert db.by_mx("aspmx.l.google.com.evil.test") is None
    assert db.by_mx("notaspmx.l.google.com") is None
    assert db.by_mx("contoso-com.mail.protection.outlook.com") is db.get("microsoft365")


def test_by_domain_accepts_unicode_and_case(db: ProviderDb) -> None:
    assert db.by_domain("Yandex.RU.") is db.get("yandex")
    assert db.by_domain("пример.рф") is None


# --- load errors name the file -------------------------------------------------------------

GOOD = """\
id: local
name: Local Mail
domains: [local.test]
login: address
servers:
  imap: [{host: imap.local.test, port: 993, security: ssl}]
notes:
  en: ["Use your full address."]
  ru: ["Используйте полный адрес."]
links: [https://help.local.test/mail]
"""


def write(tmp_path: Path, text: str, name: str = "local.yaml") -> Path:
    folder = tmp_path / "providers"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_extra_directory_adds_and_overrides(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(
        tmp_path,
        GOOD.replace("id: local", "id: yandex")
        .replace("local.test]", "yandex.ru]")
        .replace("Local Mail", "My Yandex"),
        name="y.yaml",
    )
    db = load_providers([tmp_path])
    assert db.by_domain("local.test") is db.get("local")
    assert db.get("yandex").name == "My Yandex"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("login: address", "login: address\nsurprise: 1"), "unknown key(s) surprise"),
        (("security: ssl", "security: tls"), "security 'tls'"),
        (("port: 993", "port: 99999"), "port 99999"),
        (("port: 993", "port: '993'"), "port '993'"),
        (("host: imap.local.test", "host: imap_local"), "host 'imap_local'"),
        (("host: imap.local.test", "host: IMAP.local.test"), "lower-case"),
        (("imap: [", "ftp: ["), "unknown service 'ftp'"),
        (("port: 993, security", "port: 993, tls: yes, security"), "unknown server key(s) tls"),
        (("login: address", "login: email"), "login must be one of"),
        (('  ru: ["Используйте полный адрес."]\n', ""), "notes.ru must list"),
        (('  en: ["Use your full address."]', '  en: ["a", "b"]'), "same number of notes"),
        (("links: [https://help.local.test/mail]", "links: [http://help.local.test]"), "https://"),
        (("links: [https://help.local.test/mail]", "links: []"), "cite at least one"),
        (("domains: [local.test]", "domains: [Local.test]"), "lower case"),
        (("domains: [local.test]", "domains: [local.test, local.test]"), "twice"),
        (("domains: [local.test]", "mx: ['*.bad pattern']"), "mx pattern"),
        (("name: Local Mail", "name: Local Mail\nname: Again"), "duplicate key 'name'"),
        (("servers:", "servers: [oops"), "invalid YAML"),
        (("links:", "auth: [oauth2]\nlinks:"), "auth must map smtp/imap/pop3"),
        (("links:", "auth: {imap: [oauth3]}\nlinks:"), "unknown sign-in method 'oauth3'"),
        (("links:", "auth: {smtp: [oauth2]}\nlinks:"), "auth.smtp: the entry lists no smtp server"),
        (("links:", "auth: {imap: [oauth2, oauth2]}\nlinks:"), "lists a method twice"),
        (("links:", "auth: {imap: []}\nlinks:"), "at least one sign-in method"),
        (("links:", "auth: {web: [oauth2]}\nlinks:"), "unknown service 'web'"),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, change: tuple[str, str], words: str) -> None:
    old, new = change
    assert old in GOOD
    folder = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ProviderError) as info:
        load_providers([folder])
    message = str(info.value)
    assert "local.yaml" in message and words in message, message
    assert "\n" not in message


def test_sign_in_methods_per_service(tmp_path: Path, db: ProviderDb) -> None:
    """``auth``: how mail programs may sign in, per service, preferred first; unknown: ()."""
    folder = write(
        tmp_path, GOOD.replace("links:", "auth:\n  imap: [oauth2, app_password]\nlinks:")
    )
    local = load_providers([folder]).get("local")
    assert local is not None and local.auth_for(Service.IMAP) == ("oauth2", "app_password")
    assert local.auth_for(Service.SMTP) == ()
    # OAuth2 where the providers document it (their XOAUTH2 pages are cited in the files)
    for pid in ("gmail", "google-workspace", "outlook", "microsoft365"):
        provider = db.get(pid)
        assert provider is not None
        assert all("oauth2" in provider.auth_for(s) for s in provider.servers), pid
    yandex = db.get("yandex")
    assert yandex is not None
    assert "oauth2" in yandex.auth_for(Service.IMAP) and "oauth2" in yandex.auth_for(Service.SMTP)
    assert "oauth2" not in yandex.auth_for(Service.POP3)  # Yandex: IMAP and SMTP only
    icloud = db.get("icloud")
    assert icloud is not None and icloud.auth_for(Service.IMAP) == ()  # not stated: unknown


def test_domain_claimed_by_two_providers(tmp_path: Path) -> None:
    folder = write(tmp_path, GOOD.replace("domains: [local.test]", "domains: [gmail.com]"))
    with pytest.raises(ProviderError, match=r"local\.yaml: domain 'gmail\.com' is also claimed"):
        load_providers([folder])


def test_same_id_twice_in_one_directory(tmp_path: Path) -> None:
    write(tmp_path, GOOD, name="a.yaml")
    write(tmp_path, GOOD.replace("local.test]", "other.test]"), name="b.yaml")
    with pytest.raises(ProviderError, match=r"b\.yaml: provider id 'local' is already defined"):
        load_providers([tmp_path])


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="local.yaml: expected a mapping"):
        load_providers([write(tmp_path, "- just\n- a list\n")])


def test_the_cached_form_keeps_every_field_of_every_provider() -> None:
    """The provider cache (plain data for marshal) loses nothing: a field added to Provider
    and forgotten in as_data/from_data fails here, not as a silently empty value in a run."""
    from maildiag.discovery.providerdb import as_data, from_data
    from maildiag.discovery.providers import load_providers

    db = load_providers((), cache=False)
    for provider in [*db, *db.ispdb]:
        assert from_data(as_data(provider)) == provider, provider.id
    assert any(p.auth for p in db), "some built-in provider declares its sign-in methods"
