"""Discovery's online sources in Thunderbird's order, and guesses that reach, on loopback only.

The well-known hosts (autoconfig.thunderbird.net, outlook.office365.com, autodiscover.<domain>)
are names in the test DNS server (tests/dnsserver.py) that point at 127.0.0.1; discovery's
``port_map`` sends its HTTPS to the test server's port and its guess probes to test peers. The
HTTPS server has a trustme certificate for every name; nothing here leaves 127.0.0.1.
"""

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
from dnsserver import DnsServer
from peers import FilteredPort, LineServer, free_port

from maildiag.address import parse_address
from maildiag.discovery import DiscoveryResult, discover
from maildiag.dnsclient import Dns
from maildiag.models import Security, Service, Source, Target

dns_zone = dnsserver.dns_zone  # the fixture: a loopback DNS server per test

LOOP = ["127.0.0.1"]
NAMES = [
    "autoconfig.example.test",
    "example.test",
    "autodiscover.example.test",
    "autoconfig.thunderbird.net",
    "outlook.office365.com",
]
MAIL_PORTS = (465, 587, 993, 143, 995, 110)

Route = tuple[int, bytes] | Callable[["_Handler"], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        self.server.requests.append((method, self.headers.get("Host", ""), self.path, body))
        route = self.server.routes.get((method, path), (404, b"not here"))
        if callable(route):
            route(self)
            return
        status, payload = route
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[tuple[str, str], Route]
    requests: list[tuple[str, str, str, bytes]]


class Https:
    """A loopback HTTPS server with a trustme certificate for every well-known name."""

    def __init__(self, ca: trustme.CA, routes: Mapping[tuple[str, str], Route]) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.routes = dict(routes)
        self.httpd.requests = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*NAMES).configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def requests(self) -> list[tuple[str, str, str, bytes]]:
        return self.httpd.requests

    def paths(self) -> list[str]:
        return [path.split("?")[0] for _, _, path, _ in self.requests]

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
def https(ca: tuple[trustme.CA, str]) -> Iterator[Callable[..., Https]]:
    servers: list[Https] = []

    def make(routes: Mapping[tuple[str, str], Route]) -> Https:
        server = Https(ca[0], routes)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def closed() -> dict[int, int]:
    """Every standard mail port mapped to a loopback port nobody listens on."""
    port = free_port()
    return {p: port for p in MAIL_PORTS}


def run(
    server: DnsServer,
    address: str,
    *,
    ca: tuple[trustme.CA, str] | None = None,
    port_map: Mapping[int, int] | None = None,
    timeout: float = 2.0,
) -> DiscoveryResult:
    return discover(
        parse_address(address),
        dns=Dns(server.address, timeout=timeout),
        timeout=timeout,
        ca_file=ca[1] if ca else None,
        port_map=port_map or {},
    )


def by_service(result: DiscoveryResult) -> dict[Service, tuple[str, int, Security, Source]]:
    return {t.service: (t.host, t.port, t.security, t.source) for t in result.targets}


# --- documents ---------------------------------------------------------------------------------


def config(host_prefix: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1"><emailProvider id="example.test">
  <domain>example.test</domain>
  <incomingServer type="imap"><hostname>{host_prefix}-imap.example.test</hostname><port>993</port>
    <socketType>SSL</socketType><username>%EMAILADDRESS%</username></incomingServer>
  <outgoingServer type="smtp"><hostname>{host_prefix}-smtp.example.test</hostname><port>587</port>
    <socketType>STARTTLS</socketType><username>%EMAILLOCALPART%</username></outgoingServer>
</emailProvider></clientConfig>""".encode()


POX = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
 <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
  <Account><AccountType>email</AccountType><Action>settings</Action>
   <Protocol><Type>IMAP</Type><Server>pox-imap.example.test</Server><Port>993</Port>
     <SSL>on</SSL><LoginName>carol@example.test</LoginName></Protocol>
   <Protocol><Type>SMTP</Type><Server>pox-smtp.example.test</Server><Port>587</Port>
     <Encryption>TLS</Encryption></Protocol>
   <Protocol><Type>EXCH</Type><Server>exch.example.test</Server></Protocol>
  </Account>
 </Response>
</Autodiscover>"""

JSON_M365 = b'{"Protocol":"AutodiscoverV1","Url":"https://outlook.office365.com/autodiscover/autodiscover.xml"}'
JSON_PATH = "/autodiscover/autodiscover.json/v1.0/carol@example.test"

ALL_ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/mail/config-v1.1.xml"): (200, config("own")),
    ("GET", "/v1.1/example.test"): (200, config("ispdb")),
    ("POST", "/autodiscover/autodiscover.xml"): (200, POX),
    ("GET", JSON_PATH): (200, JSON_M365),
}

ZONE: dict[str, dict[str, list[str]]] = {
    "example.test": {"MX": ["10 mx.yandex.net."]},
    **{name: {"A": LOOP} for name in NAMES if name != "example.test"},
    **{
        f"{p}-{s}.example.test": {"A": LOOP}
        for p in ("own", "ispdb", "pox")
        for s in ("imap", "smtp")
    },
    "imap.yandex.ru": {"A": LOOP},
    "smtp.yandex.ru": {"A": LOOP},
    "pop.yandex.ru": {"A": LOOP},
    "outlook.office365.com": {"A": LOOP},
    "smtp.office365.com": {"A": LOOP},
}

ONLY_MAILBOX = frozenset({Service.SMTP, Service.IMAP})


@pytest.mark.parametrize(
    ("dropped", "source", "imap_host", "provider"),
    [
        # the MX (Yandex) names the provider whichever source gave the servers
        ((), Source.AUTOCONFIG, "own-imap.example.test", "yandex"),
        ((("GET", "/mail/config-v1.1.xml"),), Source.ISPDB, "ispdb-imap.example.test", "yandex"),
        (
            (("GET", "/mail/config-v1.1.xml"), ("GET", "/v1.1/example.test")),
            Source.AUTODISCOVER,
            "pox-imap.example.test",
            "yandex",
        ),
        (
            (
                ("GET", "/mail/config-v1.1.xml"),
                ("GET", "/v1.1/example.test"),
                ("POST", "/autodiscover/autodiscover.xml"),
            ),
            Source.AUTODISCOVER,
            "outlook.office365.com",
            "microsoft365",
        ),
        (tuple(ALL_ROUTES), Source.MX, "imap.yandex.ru", "yandex"),
    ],
)
def test_sources_rank_in_thunderbirds_order(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
    dropped: tuple[tuple[str, str], ...],
    source: Source,
    imap_host: str,
    provider: str | None,
) -> None:
    web = https({k: v for k, v in ALL_ROUTES.items() if k not in dropped})
    server = dns_zone(ZONE)
    result = discover(
        parse_address("carol@example.test"),
        dns=Dns(server.address, timeout=2),
        timeout=2,
        only=ONLY_MAILBOX,
        ca_file=ca[1],
        port_map={**closed, 443: web.port},
    )
    assert result.discovery.source is source, result.dns.data
    assert result.discovery.provider == provider
    assert by_service(result)[Service.IMAP][:1] == (imap_host,)
    assert {t.source for t in result.targets} == {source}
    assert (
        result.certainty[Service.IMAP]
        == {
            Source.AUTOCONFIG: "published",
            Source.ISPDB: "certain",
            Source.AUTODISCOVER: "published",
            Source.MX: "via_mx",
        }[source]
    )
    # the SNI/Host of each request is the well-known name, over our resolver's 127.0.0.1
    hosts = {host.split(":")[0] for _, host, _, _ in web.requests}
    assert hosts <= set(NAMES)


def test_online_answers_carry_their_login_and_provenance(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
) -> None:
    web = https({("POST", "/autodiscover/autodiscover.xml"): (200, POX)})
    zone = {k: v for k, v in ZONE.items() if k != "example.test"}
    zone["example.test"] = {"MX": ["10 mx.example.test."]}
    result = run(dns_zone(zone), "carol@example.test", ca=ca, port_map={**closed, 443: web.port})
    assert by_service(result) == {
        Service.IMAP: ("pox-imap.example.test", 993, Security.SSL, Source.AUTODISCOVER),
        # Thunderbird's rule: "SSL" on 587 is STARTTLS
        Service.SMTP: ("pox-smtp.example.test", 587, Security.STARTTLS, Source.AUTODISCOVER),
    }
    assert result.logins[Service.IMAP] == "carol@example.test"
    data = result.dns.data["autodiscover"]
    assert data["pox"]["result"] == "ok"
    assert data["pox"]["url"].endswith("/autodiscover/autodiscover.xml")
    # the POX request names the address in the Outlook request schema, and nothing secret
    method, _, _, body = next(r for r in web.requests if r[0] == "POST")
    assert b"<EMailAddress>carol@example.test</EMailAddress>" in body
    # autodiscover.example.test exists: Exchange Online was asked too, and said 404
    assert data["exchange_online"]["result"].startswith("http: HTTP 404")
    assert result.dns.data["ispdb"]["result"].startswith("http: HTTP 404")


def test_exchange_online_is_not_asked_about_other_domains(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
) -> None:
    web = https(ALL_ROUTES)
    zone = {
        "plain.test": {"MX": ["10 mail.plain.test."]},
        "mail.plain.test": {"A": LOOP},
        "autoconfig.thunderbird.net": {"A": LOOP},
        "outlook.office365.com": {"A": LOOP},
    }
    result = run(dns_zone(zone), "dan@plain.test", ca=ca, port_map={**closed, 443: web.port})
    assert not any("autodiscover.json" in path for path in web.paths())
    assert "exchange_online" not in result.dns.data["autodiscover"]
    assert ("GET", "/v1.1/plain.test") in [(m, p.split("?")[0]) for m, _, p, _ in web.requests]
    assert result.discovery.source is Source.GUESS  # mail.plain.test resolves


def test_exchange_online_answer_elsewhere_is_not_taken(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
) -> None:
    elsewhere = b'{"Protocol":"AutodiscoverV1","Url":"https://mail.example.test/autodiscover/autodiscover.xml"}'
    web = https(
        {
            ("POST", "/autodiscover/autodiscover.xml"): (401, b"login first"),
            ("GET", JSON_PATH): (200, elsewhere),
        }
    )
    zone = {k: v for k, v in ZONE.items() if k != "example.test"}
    zone["example.test"] = {"MX": ["10 mail.example.test."]}
    result = run(dns_zone(zone), "carol@example.test", ca=ca, port_map={**closed, 443: web.port})
    data = result.dns.data["autodiscover"]
    assert data["pox"]["result"].startswith("http: HTTP 401")
    assert data["exchange_online"]["result"].startswith("not Exchange Online")
    assert result.discovery.source is not Source.AUTODISCOVER


HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><clientConfig>&a;</clientConfig>',
    config("ispdb").replace(b"</clientConfig>", b"<!--" + b"x" * 200_000 + b"--></clientConfig>"),
    b"<clientConfig><emailProvider",
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_documents_are_refused(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
    body: bytes,
) -> None:
    web = https(
        {
            ("GET", "/v1.1/example.test"): (200, body),
            ("POST", "/autodiscover/autodiscover.xml"): (200, body),
        }
    )
    zone = {k: v for k, v in ZONE.items() if k != "example.test"}
    zone["example.test"] = {"MX": ["10 mx.example.test."]}
    result = run(dns_zone(zone), "carol@example.test", ca=ca, port_map={**closed, 443: web.port})
    assert result.discovery.source not in (Source.ISPDB, Source.AUTODISCOVER)
    for outcome in (result.dns.data["ispdb"], result.dns.data["autodiscover"]["pox"]):
        assert outcome["result"].split(":")[0] in ("xml", "too_large"), outcome


def _drip(handler: _Handler) -> None:
    """Headers at once, then one byte of the body every 0.1 s for a minute; how many bytes went
    out before the client hung up is recorded in ``requests`` as the body of a "DRIP" entry."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/xml")
    handler.send_header("Content-Length", "600")
    handler.end_headers()
    sent = 0
    try:
        for _ in range(600):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            sent += 1
            time.sleep(0.1)
    except OSError:
        pass  # the client hung up: what the test wants
    handler.server.requests.append(("DRIP", "", "", str(sent).encode()))


def test_a_dripping_server_is_cut_off_at_the_deadline(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
) -> None:
    web = https({("GET", "/v1.1/example.test"): _drip})
    zone = {k: v for k, v in ZONE.items() if k != "example.test"}
    zone["example.test"] = {"MX": ["10 mx.example.test."]}
    result = run(
        dns_zone(zone), "carol@example.test", ca=ca, port_map={**closed, 443: web.port}, timeout=1
    )
    # 600 bytes at 10 per second would take a minute: the whole-response deadline ended it
    assert result.dns.data["ispdb"]["result"].startswith("timeout"), result.dns.data["ispdb"]


def test_fetch_ends_a_dripping_answer_at_its_deadline(
    https: Callable[..., Https], ca: tuple[trustme.CA, str]
) -> None:
    from maildiag.discovery.https import HttpsError, fetch, make_context

    web = https({("GET", "/slow"): _drip})
    with pytest.raises(HttpsError) as info:
        fetch(
            "example.test",
            "/slow",
            ips=["127.0.0.1"],
            context=make_context(ca[1]),
            deadline=time.monotonic() + 1,
            timeout=5,  # every byte arrives well within the per-read timeout
            port=web.port,
        )
    assert info.value.kind == "timeout"
    # the server saw the client hang up long before the minute its answer takes
    for _ in range(100):
        drips = [int(body) for method, _, _, body in web.requests if method == "DRIP"]
        if drips:
            break
        time.sleep(0.05)
    assert drips and drips[0] < 300, drips


# --- guesses that reach ------------------------------------------------------------------------


def _imap_greeter(peer: Any) -> None:
    peer.send("* OK IMAP ready")
    peer.readline()


def _smtp_greeter(peer: Any) -> None:
    peer.send("220 mx.small.test ESMTP")
    peer.readline()


def test_an_mx_host_that_serves_imap_is_found(
    dns_zone: Callable[..., DnsServer],
    line_server: Callable[..., LineServer],
    certs: Any,
    closed: dict[int, int],
) -> None:
    imap = line_server(_imap_greeter, tls=certs.valid)  # implicit TLS, like port 993
    server = dns_zone({"small.test": {"MX": ["10 mx.small.test."]}, "mx.small.test": {"A": LOOP}})
    result = run(server, "joe@small.test", port_map={**closed, 993: imap.port})
    assert by_service(result) == {Service.IMAP: ("mx.small.test", 993, Security.SSL, Source.GUESS)}
    assert result.certainty == {Service.IMAP: "answered"}
    assert result.discovery.source is Source.GUESS
    assert result.dns.problems == ()  # not "no mail servers found"
    probes = result.dns.data["guess"]["probes"]
    assert probes["mx.small.test:993"] == "greeting:*"
    assert probes["mx.small.test:465"] == "refused"
    assert imap.settled() == ["a LOGOUT"], "a probe reads the greeting and leaves, nothing else"


def test_a_server_of_another_protocol_is_not_taken(
    dns_zone: Callable[..., DnsServer],
    line_server: Callable[..., LineServer],
    closed: dict[int, int],
) -> None:
    smtp = line_server(_smtp_greeter)  # an SMTP server on the IMAP port 143
    server = dns_zone({"small.test": {"MX": ["10 mx.small.test."]}, "mx.small.test": {"A": LOOP}})
    result = run(server, "joe@small.test", port_map={**closed, 143: smtp.port})
    assert Service.IMAP not in by_service(result)
    assert result.dns.data["guess"]["probes"]["mx.small.test:143"] == "greeting:2"
    assert [p.signal for p in result.dns.problems] == ["dns.no_servers"]


def test_probes_run_at_once_within_one_timeout(
    dns_zone: Callable[..., DnsServer], closed: dict[int, int]
) -> None:
    filtered = [FilteredPort() for _ in range(3)]
    try:
        assert all(f.verify() for f in filtered)
        server = dns_zone(
            {
                "slow.test": {"MX": ["10 mx.slow.test."], "A": LOOP},
                "mx.slow.test": {"A": LOOP},
                "mail.slow.test": {"A": LOOP},
            }
        )
        ports = {**closed, 993: filtered[0].port, 587: filtered[1].port, 995: filtered[2].port}
        result = run(server, "ann@slow.test", port_map=ports, timeout=2)
    finally:
        for f in filtered:
            f.close()
    probes = result.dns.data["guess"]["probes"]
    # every host tried on the filtered ports, and each probe given up at the one deadline
    for host in ("mail.slow.test", "mx.slow.test", "slow.test"):
        assert probes.get(f"{host}:993") == "timeout", probes
    # nothing answered: a conventional name that resolves, on the implicit-TLS port, unverified
    assert by_service(result)[Service.IMAP] == ("mail.slow.test", 993, Security.SSL, Source.GUESS)
    assert result.certainty[Service.IMAP] == "resolves"


def test_nothing_is_probed_when_the_domain_publishes_srv(
    dns_zone: Callable[..., DnsServer],
    line_server: Callable[..., LineServer],
    certs: Any,
    closed: dict[int, int],
) -> None:
    imap = line_server(_imap_greeter, tls=certs.valid)
    server = dns_zone(
        {
            "pub.test": {"MX": ["10 mx.pub.test."]},
            "mx.pub.test": {"A": LOOP},
            "_imaps._tcp.pub.test": {"SRV": ["0 0 993 mx.pub.test."]},
        }
    )
    result = run(server, "eve@pub.test", port_map={**closed, 993: imap.port})
    assert by_service(result)[Service.IMAP] == ("mx.pub.test", 993, Security.SSL, Source.SRV)
    assert result.dns.data["guess"] == {"skipped": "published"}
    assert imap.connections == 0


def test_explicit_targets_keep_their_source_and_certainty(
    dns_zone: Callable[..., DnsServer],
) -> None:
    server = dns_zone({"relay.test": {"A": LOOP}})
    given = (Target(Service.SMTP, "relay.test", 587, Security.STARTTLS),)
    result = discover(
        parse_address("x@far.test"),
        explicit=given,
        only=frozenset({Service.SMTP}),
        dns=Dns(server.address, timeout=1),
        timeout=1,
    )
    assert result.targets == given and result.certainty == {Service.SMTP: "certain"}
    assert [name for name, _ in server.queries] == ["relay.test", "relay.test"]  # A and AAAA


# --- settings says where each answer came from -------------------------------------------------


def settings(address: str, **kwargs: Any) -> tuple[int, str]:
    import io

    from maildiag.commands.settings import run_settings

    out = io.StringIO()
    code = run_settings(address, timeout=2, out=out, **kwargs)
    return code, out.getvalue()


def test_settings_for_a_domain_whose_mx_host_serves_imap(
    dns_zone: Callable[..., DnsServer],
    line_server: Callable[..., LineServer],
    certs: Any,
    closed: dict[int, int],
) -> None:
    import json

    imap = line_server(_imap_greeter, tls=certs.valid)
    server = dns_zone({"small.test": {"MX": ["10 mx.small.test."]}, "mx.small.test": {"A": LOOP}})
    ports = {**closed, 993: imap.port}
    common = {"resolver": server.address, "port_map": ports}
    code, out = settings("joe@small.test", as_json=True, lang="en", **common)
    doc = json.loads(out)
    assert code == 0 and doc["discovery"] == {"source": "guess", "provider": None}
    assert [
        (s["service"], s["host"], s["port"], s["source"], s["certainty"]) for s in doc["servers"]
    ] == [("imap", "mx.small.test", 993, "guess", "answered")]
    code, text = settings("joe@small.test", as_json=False, lang="en", **common)
    assert "a guess that answered — mx.small.test greeted as a mail server" in text
    code, text = settings("joe@small.test", as_json=False, lang="ru", **common)
    assert "догадка, которая ответила — mx.small.test" in text


def test_settings_names_the_autodiscover_document(
    dns_zone: Callable[..., DnsServer],
    https: Callable[..., Https],
    ca: tuple[trustme.CA, str],
    closed: dict[int, int],
) -> None:
    import json

    web = https({("POST", "/autodiscover/autodiscover.xml"): (200, POX)})
    zone = {k: v for k, v in ZONE.items() if k != "example.test"}
    zone["example.test"] = {"MX": ["10 mx.example.test."]}
    server = dns_zone(zone)
    common = {"resolver": server.address, "port_map": {**closed, 443: web.port}, "ca_file": ca[1]}
    code, out = settings("carol@example.test", as_json=True, lang="en", **common)
    doc = json.loads(out)
    assert code == 0 and doc["certainty"] == "published"
    assert {s["source"] for s in doc["servers"]} == {"autodiscover"}
    code, text = settings("carol@example.test", as_json=False, lang="en", **common)
    url = f"https://autodiscover.example.test:{web.port}/autodiscover/autodiscover.xml"
    assert f"published through Microsoft Autodiscover ({url})" in text


def test_a_login_name_that_is_not_plain_is_not_proposed() -> None:
    from maildiag.discovery.autodiscover import parse_pox

    odd = POX.replace(
        b"<LoginName>carol@example.test</LoginName>",
        b"<LoginName>carol  rm -rf ~ " + b"x" * 300 + b"</LoginName>",
    )
    result = parse_pox(odd, parse_address("carol@example.test"), "https://x.test/")
    assert result.servers[Service.IMAP][0].login == "carol@example.test"
