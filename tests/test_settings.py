"""``maildiag settings``: the table for a mail program, for known providers and discovered ones."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path

import dnsserver
from conftest import as_command, run_cli
from dnsserver import DnsServer

from maildiag.commands.settings import run_settings

dns_zone = dnsserver.dns_zone  # the fixture: a loopback DNS server per test

LOOP = ["127.0.0.1"]


def settings(
    address: str,
    *,
    as_json: bool = False,
    lang: str = "en",
    resolver: str | None = None,
    timeout: float = 2.0,
    rules_dirs: tuple[str, ...] = (),
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        code = as_command(
            run_settings,
            address,
            as_json=as_json,
            lang=lang,
            resolver=resolver,
            timeout=timeout,
            rules_dirs=rules_dirs,
            out=out,
        )
    return code, out.getvalue(), err.getvalue()


def table(text: str) -> list[list[str]]:
    """The table's rows: service, server, port, security, login (the sign-in column left out)."""
    rows = []
    for line in text.splitlines():
        cells = line.split()
        if line.startswith("  ") and len(cells) >= 5 and cells[0] in ("IMAP", "POP3", "SMTP"):
            rows.append(cells[:5])
    return rows


def test_yandex_text_table_without_network() -> None:
    # a resolver nobody listens on: a known provider must not need DNS at all
    code, out, err = settings("user@yandex.ru", resolver="127.0.0.1:9")
    assert code == 0 and err == ""
    assert table(out) == [
        ["IMAP", "imap.yandex.ru", "993", "SSL/TLS", "user"],
        ["POP3", "pop.yandex.ru", "995", "SSL/TLS", "user"],
        ["SMTP", "smtp.yandex.ru", "465", "SSL/TLS", "user"],
    ]
    assert "Yandex Mail" in out and "certain" in out
    assert "part of the address before the @" in out
    assert "App passwords" in out  # the provider's notes, in English
    assert "https://yandex.ru/support/mail/mail-clients/others.html" in out


def test_yandex_in_russian() -> None:
    code, out, _ = settings("user@yandex.ru", lang="ru")
    assert code == 0
    assert "Сервер" in out and "Логин" in out
    assert "Почтовые программы" in out  # Russian note
    assert len(table(out)) == 3


def test_yandex_json() -> None:
    code, out, _ = settings("user@ya.ru", as_json=True)
    doc = json.loads(out)
    assert code == 0
    assert doc["schema"] == "maildiag.settings/1"
    assert doc["address"] == "user@ya.ru"
    assert doc["discovery"] == {"source": "provider", "provider": "yandex"}
    assert doc["certainty"] == "certain"
    assert [
        (s["service"], s["host"], s["port"], s["security"], s["login"]) for s in doc["servers"]
    ] == [
        ("imap", "imap.yandex.ru", 993, "ssl", "user"),
        ("pop3", "pop.yandex.ru", 995, "ssl", "user"),
        ("smtp", "smtp.yandex.ru", 465, "ssl", "user"),
    ]
    assert len(doc["notes"]) == 4 and all(isinstance(n, str) for n in doc["notes"])


def test_gmail_lists_the_starttls_alternative() -> None:
    code, out, _ = settings("x@gmail.com", as_json=True)
    doc = json.loads(out)
    assert doc["alternatives"] == [
        {
            "service": "smtp",
            "host": "smtp.gmail.com",
            "port": 587,
            "security": "starttls",
            "login": "x@gmail.com",
            "login_form": "address",
            "source": "provider",
            "certainty": "certain",
            "auth": ["oauth2", "app_password"],
        }
    ]


def test_sign_in_methods_name_oauth2_where_the_provider_takes_it() -> None:
    """The provider file's ``auth``: a column in the table, ``auth`` in the JSON; no column for a
    provider that does not say."""
    _, out, _ = settings("x@yandex.ru", as_json=True)
    auth = {s["service"]: s["auth"] for s in json.loads(out)["servers"]}
    assert auth == {
        "imap": ["app_password", "oauth2", "password"],
        "pop3": ["app_password", "password"],
        "smtp": ["app_password", "oauth2", "password"],
    }
    _, text, _ = settings("x@outlook.com", as_json=False, lang="en")
    assert "Sign-in" in text
    assert [line.split()[-1] for line in text.splitlines() if line.strip().startswith("IMAP")] == [
        "OAuth2"
    ]
    _, ru, _ = settings("x@gmail.com", as_json=False, lang="ru")
    assert "Вход" in ru and "OAuth2, пароль приложения" in ru
    _, icloud, _ = settings("x@icloud.com", as_json=False, lang="en")
    assert "Sign-in" not in icloud
    _, out, _ = settings("x@icloud.com", as_json=True)
    assert {s["auth"] for s in json.loads(out)["servers"]} == {None}


def test_custom_domain_via_mx(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "firma.test": {"MX": ["10 mx.yandex.net."]},
            "imap.yandex.ru": {"A": LOOP},
            "pop.yandex.ru": {"A": LOOP},
            "smtp.yandex.ru": {"A": LOOP},
        }
    )
    code, out, _ = settings("olga@firma.test", resolver=server.address, as_json=True)
    doc = json.loads(out)
    assert code == 0
    assert doc["certainty"] == "via_mx"
    assert doc["discovery"] == {"source": "mx", "provider": "yandex"}
    assert {s["login"] for s in doc["servers"]} == {"olga@firma.test"}  # domain mail: full address
    code, text, _ = settings("olga@firma.test", resolver=server.address)
    assert "via MX" in text and "Yandex Mail" in text


def test_srv_is_published_by_the_domain(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "example.test": {"MX": ["10 mx.example.test."]},
            "_imaps._tcp.example.test": {"SRV": ["0 0 993 mail.example.test."]},
            "_submission._tcp.example.test": {"SRV": ["0 0 587 mail.example.test."]},
            "mail.example.test": {"A": LOOP},
        }
    )
    code, out, _ = settings("p@example.test", resolver=server.address)
    assert code == 0
    assert "published by the domain (DNS SRV records)" in out
    assert table(out) == [
        ["IMAP", "mail.example.test", "993", "SSL/TLS", "p@example.test"],
        ["SMTP", "mail.example.test", "587", "STARTTLS", "p@example.test"],
    ]


def test_guess_says_it_is_unverified(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone({"tiny.test": {"MX": ["10 mail.tiny.test."]}, "mail.tiny.test": {"A": LOOP}})
    code, out, _ = settings("q@tiny.test", resolver=server.address, as_json=True)
    doc = json.loads(out)
    assert (code, doc["certainty"], doc["discovery"]["source"]) == (0, "guess", "guess")
    assert doc["notes"] == []
    code, text, _ = settings("q@tiny.test", resolver=server.address, lang="ru")
    assert "непроверенная догадка" in text


def test_nothing_found_exits_2(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone({})
    code, out, err = settings("z@void.test", resolver=server.address)
    assert code == 2 and err == ""
    assert "No mail servers found for void.test." in out
    assert "void.test does not resolve" in out, "the rule base explains why"
    code, out, _ = settings("z@void.test", resolver=server.address, as_json=True)
    doc = json.loads(out)
    assert (code, doc["certainty"], doc["servers"], doc["discovery"]["source"]) == (
        2,
        None,
        [],
        None,
    )
    assert doc["problems"][0]["signal"] == "dns.nxdomain"
    assert doc["findings"][0]["category"] == "dns_failure"


def test_bad_input_is_one_line_and_exit_3(tmp_path: Path) -> None:
    for args in (
        ["not-an-address"],
        ["a@b.test", "--resolver", "dns.test"],
        ["a@b.test", "--lang", "de"],
        ["a@b.test", "--timeout", "0"],
    ):
        result = run_cli("settings", *args)
        assert result.code == 3 and result.out == ""
        assert result.err.startswith("maildiag: ") and result.err.count("\n") == 1, result.err
    broken = tmp_path / "providers"
    broken.mkdir()
    (broken / "bad.yaml").write_text("id: bad\nname: Bad\nsurprise: 1\n", encoding="utf-8")
    code, out, err = settings("a@b.test", rules_dirs=(str(tmp_path),))
    assert code == 3 and "bad.yaml" in err and "surprise" in err
