"""The fixed cost of a check (issue 17): what a healthy run imports and loads, how it exits, and
the fast paths' answers being the same as the slow ones'. Speed itself is measured in bench/
(bench_peers.py, profile_check.py); these tests pin what makes it, never a time."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import Certs, LineServer

from maildiag.certinfo import describe_decoded
from maildiag.probes.tls import describe_certificate

# a check with every server an IP address and a verified chain needs none of these
HEAVY = ("dns", "cryptography")


def run_python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


# -- the process ends without finalization --------------------------------------------------------

EXIT_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('finalized\\n'))\n"
    "sys.argv = ['maildiag', *sys.argv[1:]]\n"
    "from maildiag.__main__ import run\n"
    "run()\n"
)


def test_console_entry_exits_without_finalization(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, "maildiag 0.1.0\n", "")


def test_console_entry_keeps_the_exit_code_and_flushes_both_streams(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "check")
    assert p.returncode == 3
    assert p.stderr.startswith("maildiag: Missing argument") and "finalized" not in p.stderr
    p = run_python(EXIT_PROBE, tmp_path, "explain", "--json", "535 5.7.8 authentication failed")
    assert p.returncode == 0 and "finalized" not in p.stderr
    assert json.loads(p.stdout)["findings"][0]["category"] == "auth_failed"


def test_console_script_is_the_fast_entry() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["maildiag"] == "maildiag.__main__:run"


# -- a healthy whole-mailbox check imports only what it uses --------------------------------------

CHECK_PROBE = (
    "import sys\n"
    "from maildiag.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "heavy = [m for m in {heavy!r} if m in sys.modules]\n"
    "sys.stderr.write(repr((rc, heavy)))\n"
)


@pytest.fixture
def mailbox(
    smtp_server: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    pop3_server: Callable[..., LineServer],
    certs: Certs,
) -> list[str]:
    """SMTP with STARTTLS, IMAP and POP3 with implicit TLS: the benchmark's whole mailbox."""
    smtp = smtp_server("starttls")
    imap = imap_server(implicit_tls=True)
    pop = pop3_server(implicit_tls=True)
    return [
        "check",
        "alice@example.test",
        "--smtp",
        f"127.0.0.1:{smtp.port}/starttls",
        "--imap",
        f"127.0.0.1:{imap.port}/ssl",
        "--pop3",
        f"127.0.0.1:{pop.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
    ]


def test_healthy_check_imports_no_resolver_and_no_x509_parser(
    mailbox: list[str], tmp_path: Path
) -> None:
    code = CHECK_PROBE.format(heavy=HEAVY)
    for fmt in ("nagios", "json"):
        p = run_python(code, tmp_path, *mailbox, "--format", fmt)
        assert p.stderr.endswith(repr((0, []))), p.stderr
    report = json.loads(p.stdout)
    tls = [c for c in report["checks"] if c["id"].endswith(".tls")]
    assert [c["status"] for c in tls] == ["ok", "ok", "ok"]
    assert all(c["data"]["sans"] == ["localhost", "mail.example.test", "127.0.0.1"] for c in tls)


def test_resolver_option_alone_imports_no_resolver(mailbox: list[str], tmp_path: Path) -> None:
    # every server an IP address: --resolver is never asked, so dnspython is never loaded
    from dnsserver import SilentResolver

    with SilentResolver() as silent:
        p = run_python(
            CHECK_PROBE.format(heavy=("dns",)),
            tmp_path,
            *mailbox,
            "--resolver",
            silent.address,
            "--format",
            "json",
        )
    assert p.stderr.endswith(repr((0, []))), p.stderr
    assert json.loads(p.stdout)["status"] == "ok"


# -- the system resolver first, dnspython to tell why -------------------------------------------


def test_names_resolve_through_the_system_without_dnspython(
    smtp_server: Callable[..., Any], certs: Certs, tmp_path: Path
) -> None:
    # "localhost" is in /etc/hosts, which the system resolver reads and a DNS query does not
    smtp = smtp_server("starttls")
    args = ["check", "alice@example.test", "--only", "smtp", "--smtp",
            f"localhost:{smtp.port}/starttls", "--ca-file", str(certs.ca_pem), "--no-clock",
            "--timeout", "5", "--format", "json"]  # fmt: skip
    p = run_python(CHECK_PROBE.format(heavy=("dns",)), tmp_path, *args)
    assert p.stderr.endswith(repr((0, []))), p.stderr
    checks = {c["id"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["dns"]["status"] == "ok"
    assert all(ipaddress.ip_address(a).is_loopback
               for a in checks["dns"]["data"]["addresses"]["localhost"])  # fmt: skip
    assert checks["smtp.connect"]["status"] == "ok"


def test_what_the_system_cannot_resolve_is_asked_of_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver
    from dnsserver import DnsServer

    from maildiag import dnsclient

    monkeypatch.setattr(dnsclient, "_system_addresses", lambda host, wait: [])
    with DnsServer({"mail.example.test": {"A": ["127.0.0.7"]}}) as server:
        ip, port = dnsclient.parse_server(server.address)

        def loopback(self: dnsclient.Dns) -> Any:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers, resolver.port = [ip], port
            return resolver

        monkeypatch.setattr(dnsclient.Dns, "_build_resolver", loopback)
        d = dnsclient.Dns(None, timeout=2)
        assert d.addresses("mail.example.test") == ["127.0.0.7"]
        with pytest.raises(dnsclient.DnsError) as exc:
            d.addresses("gone.example.test")
        assert exc.value.kind == "nxdomain"


def test_system_resolver_label_reads_resolv_conf(tmp_path: Path) -> None:
    from maildiag.dnsclient import _system_nameservers

    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.test\nnameserver 192.0.2.53\n; x\nnameserver ::1\n")
    assert _system_nameservers(str(conf)) == ["192.0.2.53", "::1"]
    assert _system_nameservers(str(tmp_path / "missing")) == []


# -- certificates described from OpenSSL's decoded form -----------------------------------------


def _decoded_pairs(ctx: ssl.SSLContext) -> list[tuple[dict[str, Any], bytes]]:
    return list(zip(ctx.get_ca_certs(), ctx.get_ca_certs(binary_form=True), strict=True))


@pytest.mark.filterwarnings("ignore:Parsed a serial number")  # an old root in certifi's bundle
def test_decoded_form_describes_certifi_bundle_as_cryptography_does() -> None:
    import certifi

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=certifi.where())
    pairs = _decoded_pairs(ctx)
    described = 0
    for info, der in pairs:
        fast = describe_decoded(info)
        if fast is not None:
            described += 1
            assert fast == describe_certificate(der), info["subject"]
    # the few it leaves to cryptography have names in other alphabets
    assert described >= len(pairs) - 5, (described, len(pairs))


def _ca_with_name(tmp_path: Path, attributes: list[list[tuple[Any, str]]], **kw: Any) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn])
            for rdn in attributes
        ]  # fmt: skip
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sans: list[x509.GeneralName] = [
        x509.DNSName("mail.example.test"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::25")),
        x509.RFC822Name("postmaster@example.test"),
        x509.DNSName("*.example.test"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.25")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(kw.get("issuer", name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(kw.get("not_after", now + dt.timedelta(days=30)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_decoded_form_of_odd_names_is_described_as_cryptography_does(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    every = [[(getattr(NameOID, n), v)] for n, v in (
        ("COUNTRY_NAME", "RU"), ("STATE_OR_PROVINCE_NAME", "Moscow"), ("LOCALITY_NAME", "Moscow"),
        ("STREET_ADDRESS", "Lva Tolstogo 16"), ("POSTAL_CODE", "119021"),
        ("ORGANIZATION_NAME", 'Ex, "Ample" + <Co>; #1'), ("ORGANIZATIONAL_UNIT_NAME", " IT "),
        ("BUSINESS_CATEGORY", "Private Organization"), ("SERIAL_NUMBER", "1027700229193"),
        ("JURISDICTION_COUNTRY_NAME", "RU"), ("JURISDICTION_STATE_OR_PROVINCE_NAME", "Moscow"),
        ("JURISDICTION_LOCALITY_NAME", "Moscow"), ("ORGANIZATION_IDENTIFIER", "VATRU-7736207543"),
        ("DOMAIN_COMPONENT", "example"), ("USER_ID", "uid1"), ("EMAIL_ADDRESS", "ca@example.test"),
        ("TITLE", "CA"), ("SURNAME", "Ivanov"), ("GIVEN_NAME", "Ivan"), ("INITIALS", "I"),
        ("GENERATION_QUALIFIER", "Jr"), ("DN_QUALIFIER", "q"), ("PSEUDONYM", "p"),
    )]  # fmt: skip
    names = {
        "every attribute": every,
        "no common name": [[(NameOID.ORGANIZATION_NAME, "Only Org")]],
        "common name": [[(NameOID.COMMON_NAME, "Example CA")], [(NameOID.COUNTRY_NAME, "RU")]],
        "multi-valued RDN": [
            [(NameOID.ORGANIZATION_NAME, "A"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "B")],
            [(NameOID.COMMON_NAME, "#hash")],
        ],
        "Cyrillic (left to cryptography)": [[(NameOID.COMMON_NAME, "Пример")]],
    }
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other Issuer")])
    for attributes in names.values():
        ctx.load_verify_locations(cadata=_ca_with_name(tmp_path, attributes))
    ctx.load_verify_locations(cadata=_ca_with_name(tmp_path, every, issuer=issuer))
    pairs = _decoded_pairs(ctx)
    assert len(pairs) == len(names) + 1
    fast = [(describe_decoded(info), der) for info, der in pairs]
    assert sum(d is None for d, _ in fast) == 1  # the Cyrillic one
    for d, der in fast:
        if d is not None:
            assert d == describe_certificate(der)
    assert {d["self_signed"] for d, _ in fast if d is not None} == {True, False}


def test_decoded_form_with_an_unknown_attribute_or_date_is_left_to_cryptography() -> None:
    leaf = {
        "subject": ((("commonName", "mail.example.test"),),),
        "issuer": ((("organizationName", "CA"),),),
        "notBefore": "Jan  5 09:34:43 2026 GMT",
        "notAfter": "Jan  5 09:34:43 2027 GMT",
    }
    assert describe_decoded(leaf) is not None
    assert describe_decoded({**leaf, "issuer": ((("1.2.3.4.5", "x"),),)}) is None
    assert describe_decoded({**leaf, "notAfter": "Jan  5 09:34:43.5 2027 GMT"}) is None
    assert describe_decoded({**leaf, "subjectAltName": (("DNS", "пример.рф"),)}) is None


# -- --ca-file is checked without the system's trust store --------------------------------------


def test_ca_file_is_checked_without_loading_the_system_store(
    monkeypatch: pytest.MonkeyPatch, certs: Certs, tmp_path: Path
) -> None:
    from maildiag.options import OptionError, parse_ca_file

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the system trust store was loaded")

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", refuse)
    assert parse_ca_file(str(certs.ca_pem)) == str(certs.ca_pem)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(OptionError, match="not a readable PEM bundle"):
        parse_ca_file(str(bad))


# -- the provider database from the cache -----------------------------------------------------

PROVIDERS_PROBE = (
    "import sys\n"
    "from maildiag.discovery.providers import load_providers\n"
    "db = load_providers()\n"
    "print(db.by_domain('yandex.ru').id, 'yaml' in sys.modules)\n"
)


def test_provider_database_is_read_back_without_yaml(tmp_path: Path) -> None:
    assert run_python(PROVIDERS_PROBE, tmp_path).stdout == "yandex True\n"  # parsed, cached
    assert run_python(PROVIDERS_PROBE, tmp_path).stdout == "yandex False\n"  # read back


EXTRA_PROVIDER = """id: acme
name: ACME Mail
domains: [acme.test]
login: address
servers:
  imap: [{host: imap.acme.test, port: %d, security: ssl}]
notes: {en: [Ask IT.], ru: [Спросите ИТ.]}
links: [https://help.acme.test/mail]
"""


def test_cached_provider_database_is_the_one_the_files_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maildiag.discovery.providers import load_providers

    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(tmp_path / "cache"))
    extra = tmp_path / "rules"
    (extra / "providers").mkdir(parents=True)
    entry = extra / "providers" / "acme.yaml"
    entry.write_text(EXTRA_PROVIDER % 993, encoding="utf-8")
    fresh = load_providers([extra], cache=False)
    load_providers([extra])  # writes the cache
    assert list((tmp_path / "cache").glob("providers-*.marshal"))
    cached = load_providers([extra])
    assert list(cached) == list(fresh) and cached.ispdb == fresh.ispdb
    for domain in ("acme.test", "yandex.ru", "gmx.de", "example.test"):
        assert cached.by_domain(domain) == fresh.by_domain(domain)
    assert cached.by_mx("mx.yandex.net") == fresh.by_mx("mx.yandex.net")
    assert cached.get("gmail") == fresh.get("gmail")
    # a changed file is read again
    entry.write_text(EXTRA_PROVIDER % 10993, encoding="utf-8")
    again = load_providers([extra]).by_domain("acme.test")
    assert again is not None and again.servers[next(iter(again.servers))][0].port == 10993


# -- TLS contexts on first use ------------------------------------------------------------------

BUNDLE_PROBE = (
    "import ssl, sys\n"
    "loaded = []\n"
    "original = ssl.SSLContext.load_verify_locations\n"
    "def spy(self, cafile=None, capath=None, cadata=None):\n"
    "    loaded.append(cafile or capath or 'cadata')\n"
    "    return original(self, cafile, capath, cadata)\n"
    "ssl.SSLContext.load_verify_locations = spy\n"
    "from maildiag.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "import os\n"
    "from maildiag.net import certifi_bundle\n"
    "mine = [x for x in loaded if x == certifi_bundle() or os.path.basename(x).startswith('ca-')]\n"
    "sys.stderr.write(repr((rc, len(mine), 'certifi' in sys.modules)))\n"
)


def test_ca_bundle_loaded_once_and_only_for_a_handshake(
    mailbox: list[str], closed_port: int, tmp_path: Path
) -> None:
    """certifi's bundle (its file, or its hashed directory: maildiag.castore), once a run."""
    p = run_python(BUNDLE_PROBE, tmp_path, *mailbox, "--format", "json")
    assert p.stderr.endswith(repr((0, 1, False))), p.stderr
    refused = [
        "check", "alice@example.test", "--imap", f"127.0.0.1:{closed_port}/ssl",
        "--only", "imap", "--no-clock", "--timeout", "2", "--format", "json",
    ]  # fmt: skip
    p = run_python(BUNDLE_PROBE, tmp_path, *refused)
    assert p.stderr.endswith(repr((2, 0, False))), p.stderr


def test_certifi_bundle_is_the_one_certifi_names() -> None:
    import certifi

    from maildiag.net import certifi_bundle

    assert os.path.samefile(certifi_bundle(), certifi.where())


# -- the rule base: texts at once, rules on first use -----------------------------------------


def test_deferred_rule_base_reads_rules_only_when_a_reply_needs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from maildiag.models import Summary
    from maildiag.rulebase import RuleBase

    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(tmp_path / "cache"))
    first = RuleBase.deferred()  # no texts cached yet: the whole rule base, texts left behind
    assert type(first) is RuleBase
    loads: list[int] = []
    load = RuleBase.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[RuleBase], *args: Any, **kwargs: Any) -> RuleBase:
        loads.append(1)
        return load(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(RuleBase, "load", classmethod(counting))
    rules = RuleBase.deferred()
    assert type(rules) is not RuleBase and isinstance(rules, RuleBase)
    summary = Summary("tls.ok", {"version": "TLSv1.3", "days": 90})
    assert rules.summary_text(summary, "ru") == first.summary_text(summary, "ru")
    assert rules.interception == first.interception and loads == []
    text = "535 5.7.8 Error: authentication failed"
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(rules.match(text))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [1]  # once, whichever thread asked first
    assert [[m.rule.id for m in r] for r in results] == [[m.rule.id for m in first.match(text)]] * 4


RULES_PROBE = (
    "import sys\n"
    "from maildiag.rulebase import RuleBase\n"
    "loads = []\n"
    "load = RuleBase.load.__func__\n"
    "RuleBase.load = classmethod(lambda cls, *a, **k: loads.append(1) or load(cls, *a, **k))\n"
    "from maildiag.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stderr.write(repr((rc, len(loads))))\n"
)


def test_healthy_check_with_nothing_to_explain_reads_no_rules(
    imap_server: Callable[..., LineServer], certs: Certs, tmp_path: Path
) -> None:
    imap = imap_server(implicit_tls=True)
    args = ["check", "alice@example.test", "--only", "imap", "--imap",
            f"127.0.0.1:{imap.port}/ssl", "--ca-file", str(certs.ca_pem), "--no-clock",
            "--timeout", "5", "--format", "json"]  # fmt: skip
    first = run_python(RULES_PROBE, tmp_path, *args)
    assert first.stderr.endswith(repr((0, 1))), first.stderr  # the first run reads them
    second = run_python(RULES_PROBE, tmp_path, *args)
    assert second.stderr.endswith(repr((0, 0))), second.stderr
    summaries = [[c["summary"] for c in json.loads(p.stdout)["checks"]] for p in (first, second)]
    assert summaries[0] == summaries[1] and "TLSv1.3, certificate valid for" in str(summaries)


THREADS_PROBE = (
    "import sys, threading\n"
    "started = []\n"
    "start = threading.Thread.start\n"
    "def spy(self):\n"
    "    started.append(self.name.split(':')[0].split('-')[0])\n"
    "    return start(self)\n"
    "threading.Thread.start = spy\n"
    "from maildiag.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stderr.write(repr((rc, sorted(started))))\n"
)


def test_threads_only_for_what_waits_on_the_network(mailbox: list[str], tmp_path: Path) -> None:
    # servers given as addresses and --no-clock: one thread per session, none to look up an
    # address or to say the clock check is off
    p = run_python(THREADS_PROBE, tmp_path, *mailbox, "--format", "json")
    assert p.stderr.endswith(repr((0, ["maildiag"] * 3))), p.stderr


def test_discovery_contexts_load_neither_the_whole_bundle_nor_the_system_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from maildiag.discovery import guess, https
    from maildiag.net import certifi_bundle

    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(tmp_path / "cache"))
    loaded: list[str] = []
    original = ssl.SSLContext.load_verify_locations

    def spy(
        self: ssl.SSLContext, cafile: Any = None, capath: Any = None, cadata: Any = None
    ) -> Any:
        loaded.append(str(cafile or capath or "cadata"))
        return original(self, cafile, capath, cadata)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the system trust store was loaded")

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", spy)
    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", refuse)
    strict = https.make_context(None)  # one per fetch
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert certifi_bundle() not in loaded and any("ca-" in x for x in loaded)
    probe = guess._unverified_context()
    assert probe.verify_mode == ssl.CERT_NONE and not probe.check_hostname
