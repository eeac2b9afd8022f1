"""discover() against a real DNS server on loopback (tests/dnsserver.py) and a local HTTPS server
with trustme certificates for autoconfig. Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dnsserver
import pytest
import trustme
from dnsserver import DnsServer, SilentResolver
from peers import free_port

from maildiag.address import parse_address
from maildiag.discovery import DiscoveryResult, discover
from maildiag.dnsclient import Dns
from maildiag.models import Security, Service, Source, Status, Target

dns_zone = dnsserver.dns_zone  # the fixture: a loopback DNS server per test

LOOP = ["127.0.0.1"]


# guesses probe the standard mail ports: send them to a loopback port nobody listens on, so
# that whatever this machine runs on 993 or 587 cannot change an answer
CLOSED = dict.fromkeys((465, 587, 993, 143, 995, 110), free_port())


def run(server: DnsServer, address: str, timeout: float = 2.0, **kwargs: Any) -> DiscoveryResult:
    kwargs["port_map"] = {**CLOSED, **kwargs.get("port_map", {})}
    return discover(
        parse_address(address), dns=Dns(server.address, timeout=timeout), timeout=timeout, **kwargs
    )


def signals(result: DiscoveryResult) -> list[str]:
    return [p.signal for p in result.dns.problems]


def by_service(result: DiscoveryResult) -> dict[Service, Target]:
    return {t.service: t for t in result.targets}


# --- provider database ---------------------------------------------------------------------


def test_provider_domain_gives_yandex_servers_and_login(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "yandex.ru": {"MX": ["10 mx.yandex.ru."]},
            "imap.yandex.ru": {"A": LOOP},
            "pop.yandex.ru": {"A": LOOP},
            "smtp.yandex.ru": {"A": LOOP},
        }
    )
    result = run(server, "user@yandex.ru")
    assert result.discovery.source is Source.PROVIDER
    assert result.discovery.provider == "yandex"
    got = {(t.service, t.host, t.port, t.security, t.source) for t in result.targets}
    assert got == {
        (Service.SMTP, "smtp.yandex.ru", 465, Security.SSL, Source.PROVIDER),
        (Service.IMAP, "imap.yandex.ru", 993, Security.SSL, Source.PROVIDER),
        (Service.POP3, "pop.yandex.ru", 995, Security.SSL, Source.PROVIDER),
    }
    assert [t.service for t in result.targets] == [Service.SMTP, Service.IMAP, Service.POP3]
    assert result.logins[Service.IMAP] == "user"
    assert result.dns.status is Status.OK and result.dns.problems == ()
    # a known provider needs no SRV, autoconfig or guess lookups
    assert not any(name.startswith(("_", "autoconfig.")) for name, _ in server.queries)


# --- SRV (RFC 6186 / RFC 8314) ---------------------------------------------------------------


def test_srv_prefers_implicit_tls_and_priority(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "example.test": {"MX": ["10 mx.example.test."]},
            "mx.example.test": {"A": LOOP},
            "_submissions._tcp.example.test": {
                "SRV": ["10 0 465 backup.example.test.", "0 5 465 submit.example.test."]
            },
            "_submission._tcp.example.test": {"SRV": ["0 0 587 submit.example.test."]},
            "_imaps._tcp.example.test": {"SRV": ["0 0 993 mailbox.example.test."]},
            "_imap._tcp.example.test": {"SRV": ["0 0 143 mailbox.example.test."]},
            "_pop3s._tcp.example.test": {"SRV": ["0 0 0 ."]},  # RFC 6186: not offered
            "submit.example.test": {"A": LOOP},
            "backup.example.test": {"A": LOOP},
            "mailbox.example.test": {"A": LOOP},
            "pop.example.test": {"A": LOOP},  # must NOT be guessed: POP3 is declared not offered
        }
    )
    result = run(server, "alice@example.test")
    targets = by_service(result)
    assert result.discovery.source is Source.SRV
    assert targets[Service.SMTP] == Target(
        Service.SMTP, "submit.example.test", 465, Security.SSL, Source.SRV
    )
    assert targets[Service.IMAP] == Target(
        Service.IMAP, "mailbox.example.test", 993, Security.SSL, Source.SRV
    )
    assert Service.POP3 not in targets
    assert result.dns.data["not_offered"] == ["pop3"]
    assert result.dns.data["srv"]["alternatives"]["_submissions._tcp.example.test"] == [
        "backup.example.test:465"
    ]
    assert result.dns.status is Status.OK


def test_srv_starttls_when_only_submission_is_published(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "example.test": {"MX": ["10 mx.example.test."]},
            "_submissions._tcp.example.test": {"SRV": ["0 0 0 ."]},
            "_submission._tcp.example.test": {"SRV": ["0 0 587 smtp.example.test."]},
            "smtp.example.test": {"A": LOOP},
        }
    )
    result = run(server, "bob@example.test", only=frozenset({Service.SMTP}))
    assert result.targets == (
        Target(Service.SMTP, "smtp.example.test", 587, Security.STARTTLS, Source.SRV),
    )


# --- autoconfig ------------------------------------------------------------------------------

CONFIG = b"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="example.test">
    <domain>example.test</domain>
    <incomingServer type="imap">
      <hostname>imap.%EMAILDOMAIN%</hostname><port>993</port><socketType>SSL</socketType>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <incomingServer type="pop3">
      <hostname>pop3.example.test</hostname><port>995</port><socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>out.example.test</hostname><port>587</port><socketType>STARTTLS</socketType>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>out.example.test</hostname><port>465</port><socketType>SSL</socketType>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""


class _Https:
    """A local HTTPS server with a trustme certificate serving fixed paths."""

    def __init__(self, ca: trustme.CA, names: list[str], routes: Mapping[str, tuple[int, bytes]]):
        routes_ = dict(routes)
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.headers.get("Host", ""), self.path))
                status, body = routes_.get(self.path.split("?")[0], (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, str]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, str(path)


@pytest.fixture
def https(ca: tuple[trustme.CA, str]) -> Iterator[Callable[..., _Https]]:
    servers: list[_Https] = []

    def make(routes: Mapping[str, tuple[int, bytes]], names: list[str] | None = None) -> _Https:
        server = _Https(ca[0], names or ["autoconfig.example.test", "example.test"], routes)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


AUTOCONFIG_ZONE = {
    "example.test": {"MX": ["10 mx.example.test."], "A": LOOP},
    "autoconfig.example.test": {"A": LOOP},
    "imap.example.test": {"A": LOOP},
    "pop3.example.test": {"A": LOOP},
    "out.example.test": {"A": LOOP},
}


def test_autoconfig_from_autoconfig_subdomain(
    dns_zone: Callable[..., DnsServer], https: Callable[..., _Https], ca: tuple[trustme.CA, str]
) -> None:
    web = https({"/mail/config-v1.1.xml": (200, CONFIG)})
    server = dns_zone(AUTOCONFIG_ZONE)
    result = run(server, "carol@example.test", ca_file=ca[1], port_map={443: web.port})
    assert result.discovery.source is Source.AUTOCONFIG
    assert result.discovery.provider is None
    assert by_service(result) == {
        Service.SMTP: Target(
            Service.SMTP, "out.example.test", 587, Security.STARTTLS, Source.AUTOCONFIG
        ),
        Service.IMAP: Target(
            Service.IMAP, "imap.example.test", 993, Security.SSL, Source.AUTOCONFIG
        ),
        Service.POP3: Target(
            Service.POP3, "pop3.example.test", 995, Security.SSL, Source.AUTOCONFIG
        ),
    }
    assert result.logins == {
        Service.IMAP: "carol",
        Service.POP3: "carol@example.test",
        Service.SMTP: "carol@example.test",
    }
    assert (
        f"autoconfig.example.test:{web.port}",
        "/mail/config-v1.1.xml?emailaddress=carol@example.test",
    ) in web.requests
    assert result.dns.data["autoconfig"]["alternatives"] == {"smtp": ["out.example.test:465/ssl"]}


def test_autoconfig_well_known_when_subdomain_missing(
    dns_zone: Callable[..., DnsServer], https: Callable[..., _Https], ca: tuple[trustme.CA, str]
) -> None:
    web = https({"/.well-known/autoconfig/mail/config-v1.1.xml": (200, CONFIG)})
    zone = {k: v for k, v in AUTOCONFIG_ZONE.items() if k != "autoconfig.example.test"}
    result = run(dns_zone(zone), "dave@example.test", ca_file=ca[1], port_map={443: web.port})
    assert result.discovery.source is Source.AUTOCONFIG
    assert "well-known" in result.dns.data["autoconfig"]["used"]


def test_autoconfig_untrusted_certificate_is_not_used(
    dns_zone: Callable[..., DnsServer], https: Callable[..., _Https]
) -> None:
    web = https({"/mail/config-v1.1.xml": (200, CONFIG)})
    zone = dict(AUTOCONFIG_ZONE, **{"smtp.example.test": {"A": LOOP}})
    result = run(dns_zone(zone), "erin@example.test", port_map={443: web.port})  # no ca_file
    assert result.discovery.source is Source.GUESS
    tried = result.dns.data["autoconfig"]["tried"]
    assert any(v.startswith("tls:") for v in tried.values())


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><clientConfig>&a;</clientConfig>',
        b"<clientConfig><emailProvider id='x'></emailProvider>",
        b"<html>not a config</html>",
        CONFIG.replace(b"</clientConfig>", b"<!-- " + b"x" * 200_000 + b" --></clientConfig>"),
    ],
)
def test_autoconfig_refuses_hostile_or_broken_files(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., _Https],
    ca: tuple[trustme.CA, str],
    body: bytes,
) -> None:
    web = https(
        {
            "/mail/config-v1.1.xml": (200, body),
            "/.well-known/autoconfig/mail/config-v1.1.xml": (200, body),
        }
    )
    result = run(
        dns_zone(AUTOCONFIG_ZONE), "frank@example.test", ca_file=ca[1], port_map={443: web.port}
    )
    assert result.discovery.source is not Source.AUTOCONFIG
    reasons = list(result.dns.data["autoconfig"]["tried"].values())
    assert reasons and all(r.split(":")[0] in ("xml", "too_large", "empty") for r in reasons)


# --- MX matched against the provider database -------------------------------------------------


def test_custom_domain_on_yandex_via_mx(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "corp.test": {"MX": ["10 mx.yandex.net."]},
            "imap.yandex.ru": {"A": LOOP},
            "pop.yandex.ru": {"A": LOOP},
            "smtp.yandex.ru": {"A": LOOP},
            "smtp.corp.test": {"A": LOOP},  # a guess would find this, but MX wins
        }
    )
    result = run(server, "ivan@corp.test")
    assert result.discovery.source is Source.MX
    assert result.discovery.provider == "yandex"
    assert {t.host for t in result.targets} == {"imap.yandex.ru", "pop.yandex.ru", "smtp.yandex.ru"}
    assert all(t.source is Source.MX for t in result.targets)
    # domain mail at Yandex 360: the login is the full address
    assert result.logins[Service.IMAP] == "ivan@corp.test"
    assert result.provider is not None and result.provider.id == "yandex"


def test_custom_domain_on_zoho_uses_pro_servers(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "shop.test": {"MX": ["10 mx.zoho.com.", "20 mx2.zoho.com."]},
            "imappro.zoho.com": {"A": LOOP},
            "smtppro.zoho.com": {"A": LOOP},
        }
    )
    result = run(server, "anna@shop.test", only=frozenset({Service.IMAP, Service.SMTP}))
    assert [t.host for t in result.targets] == ["smtppro.zoho.com", "imappro.zoho.com"]


# --- guess -----------------------------------------------------------------------------------


def test_guess_conventional_names(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "small.test": {"MX": ["10 mx.small.test."]},
            "mx.small.test": {"A": LOOP},
            "mail.small.test": {"A": LOOP},
            "imap.small.test": {"AAAA": ["::1"]},
        }
    )
    result = run(server, "joe@small.test")
    assert result.discovery.source is Source.GUESS
    assert result.discovery.provider is None
    assert by_service(result) == {
        Service.SMTP: Target(Service.SMTP, "mail.small.test", 465, Security.SSL, Source.GUESS),
        Service.IMAP: Target(Service.IMAP, "imap.small.test", 993, Security.SSL, Source.GUESS),
        Service.POP3: Target(Service.POP3, "mail.small.test", 995, Security.SSL, Source.GUESS),
    }
    assert result.dns.status is Status.OK
    assert result.dns.data["addresses"]["imap.small.test"] == ["::1"]


def test_idn_domain_goes_to_dns_as_punycode(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "xn--e1afmkfd.xn--p1ai": {"MX": ["10 mail.xn--e1afmkfd.xn--p1ai."]},
            "mail.xn--e1afmkfd.xn--p1ai": {"A": LOOP},
        }
    )
    result = run(server, "Алиса@Пример.РФ")
    assert result.discovery.source is Source.GUESS
    assert result.targets[0].host == "mail.xn--e1afmkfd.xn--p1ai"
    assert result.dns.data["domain"] == "пример.рф"
    assert ("xn--e1afmkfd.xn--p1ai", "MX") in server.queries


# --- the dns check's problems ----------------------------------------------------------------


def test_nxdomain(dns_zone: Callable[..., DnsServer]) -> None:
    result = run(dns_zone({}), "who@nowhere.test")
    assert result.discovery.source is None and result.targets == ()
    assert signals(result) == ["dns.nxdomain"]
    assert result.dns.problems[0].params["domain"] == "nowhere.test"
    assert result.dns.status is Status.FAIL


def test_no_mx_and_no_servers(dns_zone: Callable[..., DnsServer]) -> None:
    result = run(dns_zone({"bare.test": {"A": LOOP}}), "x@bare.test")
    assert result.discovery.source is None and result.targets == ()
    assert signals(result) == ["dns.no_mx", "dns.no_servers"]
    assert result.dns.status is Status.FAIL


def test_null_mx_is_no_mx(dns_zone: Callable[..., DnsServer]) -> None:
    result = run(
        dns_zone({"nomail.test": {"MX": ["0 ."]}, "mail.nomail.test": {"A": LOOP}}), "x@nomail.test"
    )
    problem = result.dns.problems[0]
    assert problem.signal == "dns.no_mx" and problem.params["null_mx"] is True


def test_servfail_is_dns_error(dns_zone: Callable[..., DnsServer]) -> None:
    result = run(dns_zone({}, servfail=["broken.test"]), "x@broken.test", timeout=1.0)
    assert "dns.error" in signals(result)
    err = next(p for p in result.dns.problems if p.signal == "dns.error")
    assert err.params["name"] == "broken.test"


def test_provider_server_that_does_not_resolve(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "gmail.com": {"MX": ["5 gmail-smtp-in.l.google.com."]},
            "imap.gmail.com": {"A": LOOP},
            "smtp.gmail.com": {"A": LOOP},
            "pop.gmail.com": {"TXT": ['"no address here"']},
        }
    )
    result = run(server, "g@gmail.com")
    assert signals(result) == ["dns.host_unresolved"]
    assert result.dns.problems[0].params == {
        "host": "pop.gmail.com",
        "service": "pop3",
        "port": 995,
        "security": "ssl",
    }


def test_silent_resolver_finishes_within_the_timeout() -> None:
    timeout = 1.0
    with SilentResolver() as silent:
        started = time.monotonic()
        result = discover(
            parse_address("someone@example.test"),
            dns=Dns(silent.address, timeout=timeout),
            timeout=timeout,
        )
        elapsed = time.monotonic() - started
    assert silent.received >= 5  # MX, SRV, autoconfig and guess names were all asked at once
    assert elapsed < timeout + 0.7, elapsed
    assert signals(result) == ["dns.timeout"]
    assert result.dns.problems[0].params["resolver"] == silent.address
    assert result.discovery.source is None and result.targets == ()


def test_silent_resolver_with_known_provider_still_gives_servers() -> None:
    with SilentResolver() as silent:
        started = time.monotonic()
        result = discover(
            parse_address("me@mail.ru"), dns=Dns(silent.address, timeout=0.5), timeout=0.5
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1.2
    assert result.discovery.source is Source.PROVIDER
    assert {t.host for t in result.targets} == {"smtp.mail.ru", "imap.mail.ru", "pop.mail.ru"}
    assert signals(result) == ["dns.timeout"]


# --- explicit servers ------------------------------------------------------------------------


def test_all_explicit_only_checks_their_names(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone({"relay.test": {"A": LOOP}})
    explicit = (
        Target(Service.SMTP, "relay.test", 587, Security.STARTTLS),
        Target(Service.IMAP, "missing.test", 993, Security.SSL),
    )
    result = run(
        server, "x@nowhere.test", explicit=explicit, only=frozenset({Service.SMTP, Service.IMAP})
    )
    assert result.discovery.source is Source.EXPLICIT
    assert result.targets == explicit
    assert signals(result) == ["dns.host_unresolved"]  # no NXDOMAIN for the address's domain
    assert result.dns.problems[0].params["host"] == "missing.test"
    assert ("nowhere.test", "MX") not in server.queries


def test_explicit_plus_discovered(dns_zone: Callable[..., DnsServer]) -> None:
    server = dns_zone(
        {
            "yandex.ru": {"MX": ["10 mx.yandex.ru."]},
            "imap.yandex.ru": {"A": LOOP},
            "pop.yandex.ru": {"A": LOOP},
        }
    )
    explicit = (Target(Service.SMTP, "127.0.0.1", 2525, Security.STARTTLS),)
    result = run(server, "u@yandex.ru", explicit=explicit)
    # the other services are still discovered; source names where the discovered ones came from
    assert result.discovery.source is Source.PROVIDER
    assert [(t.service, t.source) for t in result.targets] == [
        (Service.SMTP, Source.EXPLICIT),
        (Service.IMAP, Source.PROVIDER),
        (Service.POP3, Source.PROVIDER),
    ]
    assert result.dns.problems == ()
