"""Thunderbird's ISPDB shipped with maildiag: every domain answered offline, agreement with the
ISPDB, the documented differences of our hand-written entries, the importer and the loader."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT
from dnsserver import SilentResolver

from maildiag.address import parse_address
from maildiag.commands.settings import run_settings
from maildiag.discovery import ispdb
from maildiag.discovery.providerdb import ProviderDb, ProviderError
from maildiag.discovery.providers import load_providers
from maildiag.models import Service

SHIPPED = ROOT / "rules" / "providers" / "ispdb"


@pytest.fixture(scope="module")
def db() -> ProviderDb:
    return load_providers()


def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SHIPPED / "ispdb.json").read_text(encoding="utf-8"))
    return doc


def listed(entry: dict[str, Any], domain: str) -> dict[str, set[tuple[str, int, str]]]:
    """The ISPDB's servers for ``domain``, read from the file itself (not through our loader)."""
    return {
        service: {(h.replace("%EMAILDOMAIN%", domain), p, s) for h, p, s, _ in specs}
        for service, specs in entry["servers"].items()
    }


def test_every_ispdb_domain_is_answered_offline_and_agrees(db: ProviderDb) -> None:
    doc = shipped()
    assert doc["counts"] == {
        "files": 163,
        "providers": 163,
        "domains": 962,
        "domain_entries": 963,  # cty-net.ne.jp is listed twice in its file
    }
    answered, agree, disagree = 0, 0, []
    with SilentResolver() as silent:
        for entry in doc["providers"]:
            for domain in entry["domains"]:
                out = io.StringIO()
                code = run_settings(
                    f"user@{domain}",
                    as_json=True,
                    lang="en",
                    resolver=silent.address,
                    timeout=1,
                    out=out,
                    providers=db,
                )
                settings = json.loads(out.getvalue())
                assert code == 0, domain
                assert settings["discovery"]["source"] == "provider", domain
                answered += 1
                first = {
                    s["service"]: (s["host"], s["port"], s["security"]) for s in settings["servers"]
                }
                theirs = listed(entry, domain)
                if all(first.get(svc) in specs for svc, specs in theirs.items()):
                    agree += 1
                else:
                    disagree.append(domain)
        assert silent.received == 0, "settings of a known domain asked the network"
    assert answered == 962
    assert agree / answered >= 0.97, (agree, disagree)
    # the disagreements are exactly the domains our hand-written entries answer differently,
    # and each says so (ispdb_differences)
    assert sorted(disagree) == sorted(
        ["yandex.ru", "yandex.com", "yandex.by", "yandex.kz", "yandex.ua", "ya.ru", "narod.ru"]
    )


def test_settings_json_names_the_ispdb_entry_and_its_origin(db: ProviderDb) -> None:
    out = io.StringIO()
    assert (
        run_settings(
            "anna@online.de",
            as_json=True,
            lang="ru",
            resolver=None,
            timeout=1,
            out=out,
            providers=db,
        )
        == 0
    )
    doc = json.loads(out.getvalue())
    assert doc["discovery"] == {"source": "provider", "provider": "ispdb:1und1.de"}
    assert doc["provider_origin"] == "ispdb" and doc["provider_name"] == "1&1"
    assert doc["certainty"] == "certain" and doc["notes"] == []  # the ISPDB has no ru notes
    assert [(s["service"], s["host"], s["port"]) for s in doc["servers"]] == [
        ("imap", "imap.1und1.de", 993),
        ("pop3", "pop.1und1.de", 995),
        ("smtp", "smtp.1und1.de", 465),
    ]
    assert ("imap", "imap.1und1.de", 143, "starttls") in [
        (a["service"], a["host"], a["port"], a["security"]) for a in doc["alternatives"]
    ]
    text = io.StringIO()
    run_settings(
        "anna@online.de", as_json=False, lang="en", resolver=None, timeout=1, out=text, providers=db
    )
    assert "Thunderbird's ISP database, shipped with maildiag" in text.getvalue()


def test_hand_written_entries_say_where_they_differ_from_the_ispdb(db: ProviderDb) -> None:
    out = io.StringIO()
    run_settings(
        "ivan@yandex.ru", as_json=True, lang="en", resolver=None, timeout=1, out=out, providers=db
    )
    doc = json.loads(out.getvalue())
    assert doc["provider_origin"] == "maildiag"
    diffs = {d["what"]: (d["maildiag"], d["ispdb"]) for d in doc["ispdb_differences"]}
    assert diffs == {
        "smtp": ("smtp.yandex.ru:465/ssl", "smtp.yandex.com:465/ssl"),
        "imap": ("imap.yandex.ru:993/ssl", "imap.yandex.com:993/ssl"),
        "pop3": ("pop.yandex.ru:995/ssl", "pop.yandex.com:995/ssl"),
        "smtp.login": ("localpart", "address"),
        "imap.login": ("localpart", "address"),
        "pop3.login": ("localpart", "address"),
    }
    assert {d["ispdb_entry"] for d in doc["ispdb_differences"]} == {"ispdb:yandex.ru"}
    # every hand-written entry that differs, and how: the list the closing note quotes
    differing = {p.id: [d["what"] for d in ispdb.differences(p, db)] for p in db}
    assert {k: v for k, v in differing.items() if v} == {
        "yandex": ["smtp", "smtp.login", "imap", "imap.login", "pop3", "pop3.login"],
        "webde": ["smtp.login", "imap.login", "pop3.login"],
    }
    gmail = json.loads(_settings_json(db, "x@gmail.com"))
    assert "ispdb_differences" not in gmail  # Gmail agrees with the ISPDB


def _settings_json(db: ProviderDb, address: str) -> str:
    out = io.StringIO()
    run_settings(address, as_json=True, lang="en", resolver=None, timeout=1, out=out, providers=db)
    return out.getvalue()


def test_hand_written_entries_win_for_their_domains(db: ProviderDb) -> None:
    yandex = db.by_domain("yandex.ru")
    assert yandex is not None and yandex.id == "yandex" and yandex.origin == "maildiag"
    other = db.by_domain("yandex.net")  # in the ISPDB's Yandex file only
    assert other is not None and other.id == "ispdb:yandex.ru" and other.origin == "ispdb"
    assert all(p.origin == "maildiag" for p in db)  # iterating gives the hand-written ones
    assert len(db.ispdb) == 163


def test_host_and_login_templates_are_filled_for_the_domain(db: ProviderDb) -> None:
    inbox = db.by_domain("inbox.lv")  # <hostname>mail.%EMAILDOMAIN%</hostname>
    assert inbox is not None
    assert {s.host for specs in inbox.servers.values() for s in specs} == {"mail.inbox.lv"}
    iij = db.by_domain("iijmio-mail.jp")  # <username>%EMAILLOCALPART%.%EMAILDOMAIN%</username>
    assert iij is not None
    service = next(s for s, specs in iij.servers.items() if specs[0].login_template)
    address = parse_address("taro@iijmio-mail.jp")
    assert iij.login_for(address, False, service) == "taro.iijmio-mail.jp"
    assert iij.login_form(False, service) == "other"


def test_mx_at_a_parent_domain_of_an_ispdb_entry(db: ProviderDb) -> None:
    # Thunderbird looks the MX's domain up in the ISPDB: mx.one.com -> one.com
    found = db.by_mx("mx1.one.com")
    assert found is not None and found.id == "ispdb:one.com"
    assert db.by_mx("mx1.example-nobody.test") is None
    # a domain the ISPDB lists, but a hand-written entry claims: that entry
    assert db.by_mx("mx.something.yandex.ru") is db.get("yandex")
    # a domain only a hand-written entry lists: found by its MX patterns only
    assert db.by_mx("mx.internet.ru") is None


def test_the_shipped_data_names_its_source_and_licence() -> None:
    doc = shipped()
    assert doc["format"] == ispdb.FORMAT
    assert doc["source"]["repository"] == "https://github.com/thunderbird/autoconfig"
    commit = doc["source"]["commit"]
    assert len(commit) == 40 and doc["source"]["licence"] == "MPL-2.0"
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert commit in readme and "Mozilla Public License 2.0" in readme
    assert "Mozilla Public License Version 2.0" in (SHIPPED / "LICENSE").read_text("utf-8")


# --- the loader is strict --------------------------------------------------------------------

GOOD = {
    "id": "x.test",
    "name": "X",
    "domains": ["x.test"],
    "links": [],
    "servers": {"imap": [["imap.x.test", 993, "ssl", "address"]]},
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"domains": ["X.test"]}, "domains must be lower-case"),
        ({"servers": {"imap": [["imap.x.test", 99999, "ssl", "address"]]}}, "port 99999"),
        ({"servers": {"imap": [["imap x", 993, "ssl", "address"]]}}, "host 'imap x'"),
        ({"servers": {"imap": [["imap.x.test", 993, "tls", "address"]]}}, "security 'tls'"),
        ({"servers": {"imap": [["imap.x.test", 993, "ssl", "$(id)"]]}}, "login '$(id)'"),
        ({"servers": {"ftp": [["ftp.x.test", 21, "plain", "address"]]}}, "unknown service"),
        ({"links": ["http://x.test/help"]}, "https://"),
        ({"id": "../x"}, "id '../x'"),
    ],
)
def test_loader_refuses_a_broken_entry(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    path = tmp_path / "ispdb.json"
    path.write_text(json.dumps({"format": ispdb.FORMAT, "providers": [{**GOOD, **change}]}))
    with pytest.raises(ProviderError) as info:
        ispdb.load_ispdb(path)
    assert "ispdb.json" in str(info.value) and words in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_loader_refuses_another_format_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ispdb.json"
    path.write_text(json.dumps({"format": "something/2", "providers": []}))
    with pytest.raises(ProviderError, match="not a maildiag.ispdb/1 document"):
        ispdb.load_ispdb(path)
    with pytest.raises(ProviderError, match="cannot read"):
        ispdb.load_ispdb(tmp_path / "missing.json")


# --- the importer ----------------------------------------------------------------------------


def importer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ispdb_import", ROOT / "scripts" / "ispdb_import.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ispdb_import"] = module
    spec.loader.exec_module(module)
    return module


def xml(provider: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">'
        f'<emailProvider id="{provider}">{body}</emailProvider></clientConfig>\n'
    )


def server(kind: str, stype: str, host: str, port: str, socket: str, user: str) -> str:
    return (
        f'<{kind} type="{stype}"><hostname>{host}</hostname><port>{port}</port>'
        f"<socketType>{socket}</socketType><username>{user}</username></{kind}>"
    )


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def snapshot(tmp_path: Path) -> Path:
    src = tmp_path / "snapshot"
    (src / "xml").mkdir(parents=True)
    (src / "LICENSE").write_text("Mozilla Public License Version 2.0\n", encoding="utf-8")
    (src / "README.md").write_text(f"snapshot at commit {COMMIT}\n", encoding="utf-8")
    files = {
        "alpha.test.xml": xml(
            "alpha.test",
            "<domain>alpha.test</domain><domain>Alpha-Mail.test</domain>"
            "<displayName>Alpha  Mail</displayName>"
            + server("incomingServer", "imap", "imap.alpha.test", "993", "SSL", "%EMAILADDRESS%")
            + server(
                "incomingServer", "imap", "imap.alpha.test", "143", "STARTTLS", "%EMAILADDRESS%"
            )
            + server(
                "outgoingServer", "smtp", "smtp.alpha.test", "587", "STARTTLS", "%EMAILLOCALPART%"
            )
            + server("incomingServer", "exchange", "ews.alpha.test", "443", "SSL", "%EMAILADDRESS%")
            + '<documentation url="https://help.alpha.test/mail"/>'
            + '<documentation url="http://old.alpha.test/"/>',
        ),
        "beta.test.xml": xml(
            "beta.test",
            "<domain>beta.test</domain><domain>alpha.test</domain>"
            + server(
                "incomingServer",
                "pop3",
                "mail.%EMAILDOMAIN%",
                "995",
                "SSL",
                "%EMAILLOCALPART%.%EMAILDOMAIN%",
            )
            + server("outgoingServer", "smtp", "bad host", "25", "plain", "%EMAILADDRESS%")
            + server("outgoingServer", "smtp", "smtp.beta.test", "25", "TLS-ish", "%EMAILADDRESS%"),
        ),
        "gamma.test.xml": '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><clientConfig/>',
    }
    for name, text in files.items():
        (src / "xml" / name).write_text(text, encoding="utf-8")
    return src


def test_importer_converts_a_snapshot_deterministically(tmp_path: Path) -> None:
    module = importer()
    src, out = snapshot(tmp_path), tmp_path / "out"
    assert module.main([str(src), "--out", str(out)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert module.main([str(src), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first, "the output must not change"
    doc = json.loads(first["ispdb.json"])
    assert doc["source"]["commit"] == COMMIT
    assert doc["counts"] == {"files": 3, "providers": 2, "domains": 3, "domain_entries": 4}
    alpha, beta = doc["providers"]
    assert alpha == {
        "id": "alpha.test",
        "file": "alpha.test.xml",
        "name": "Alpha Mail",
        "domains": ["alpha.test", "alpha-mail.test"],
        "servers": {
            "smtp": [["smtp.alpha.test", 587, "starttls", "localpart"]],
            "imap": [
                ["imap.alpha.test", 993, "ssl", "address"],
                ["imap.alpha.test", 143, "starttls", "address"],
            ],
        },
        "links": ["https://help.alpha.test/mail"],
    }
    assert beta["domains"] == ["beta.test"]  # alpha.test belongs to the first file
    assert beta["servers"] == {
        "pop3": [["mail.%EMAILDOMAIN%", 995, "ssl", "%EMAILLOCALPART%.%EMAILDOMAIN%"]]
    }
    reasons = " | ".join(doc["skipped"])
    for words in (
        "bad host",
        "TLS-ish",
        "alpha.test already in alpha.test.xml",
        "gamma.test.xml: DOCTYPE",
    ):
        assert words in reasons, words
    assert COMMIT in first["README.md"].decode() and first["LICENSE"].startswith(b"Mozilla")
    # what it wrote loads, and answers for its domains
    loaded = ispdb.load_ispdb(out / "ispdb.json")
    beta_entry = next(p for p in loaded if p.id == "ispdb:beta.test").for_domain("beta.test")
    assert beta_entry.servers[Service.POP3][0].host == "mail.beta.test"


def test_importer_needs_the_commit_and_the_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importer()
    src = snapshot(tmp_path)
    (src / "README.md").write_text("no commit named here\n", encoding="utf-8")
    assert module.main([str(src), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("ispdb_import: ") and "--commit" in err and err.count("\n") == 1
    (src / "LICENSE").unlink()
    assert module.main([str(src), "--commit", COMMIT, "--out", str(tmp_path / "out")]) == 3
    assert "LICENSE" in capsys.readouterr().err
