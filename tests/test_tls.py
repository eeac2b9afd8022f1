"""``<svc>.tls`` against real loopback peers: details, chain, expiry thresholds, interception,
outdated protocols. Certificates are made here (trustme, or cryptography for odd chains)."""

from __future__ import annotations

import datetime as dt
import ssl
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from peers import Certs, LineServer, PeerConn

from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.net import TlsSession
from maildiag.probes.session import Env, Session
from maildiag.probes.tls import ChainFacts, judge, match_product

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def run_session(
    target: Target,
    ca: str | None,
    *,
    timeout: float = 3.0,
    rules_dirs: tuple[str, ...] = (),
    warn_days: int = 21,
    crit_days: int = 7,
) -> dict[str, Observation]:
    seen: list[Observation] = []
    config = RunConfig(
        "a@example.test",
        ca_file=ca,
        timeout=timeout,
        rules_dirs=rules_dirs,
        warn_days=warn_days,
        crit_days=crit_days,
    )
    from maildiag.rulebase import RuleBase

    interception = tuple(RuleBase.load(rules_dirs).interception)
    Session(target, Env(config, seen.append, interception=interception)).probe()
    return {o.check: o for o in seen}


def smtp(port: int, security: Security = Security.SSL) -> Target:
    return Target(Service.SMTP, "127.0.0.1", port, security)


def signals(obs: Observation) -> list[str]:
    return [p.signal for p in obs.problems]


def server_ctx(cert: Any, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if max_version is not None:
        with warnings.catch_warnings():  # deprecated versions, on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS < 1.2 only at level 0
    return ctx


@pytest.fixture
def interception_rules(tmp_path: Path) -> str:
    """An extra rules directory listing one inspection product, as rules/*.yaml do."""
    (tmp_path / "interception.yaml").write_text(
        "interception:\n  - {issuer: Kaspersky Anti-Virus, product: Kaspersky}\n", encoding="utf-8"
    )
    return str(tmp_path)


@pytest.fixture(scope="module")
def av_ca() -> trustme.CA:
    """A CA named like an antivirus' mail/HTTPS-scanning root."""
    return trustme.CA(
        organization_name="AO Kaspersky Lab",
        organization_unit_name="Kaspersky Anti-Virus Personal Root Certificate",
    )


@pytest.fixture(scope="module")
def proxy_ca() -> trustme.CA:
    """A corporate TLS-inspection CA with a name no list knows."""
    return trustme.CA(organization_name="Example Corp", organization_unit_name="Egress Proxy CA")


@pytest.fixture
def os_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[trustme.CA], str]:
    """Make SSL_CERT_FILE a bundle with the given CA: the "operating system's" trust store."""

    def install(ca: trustme.CA) -> str:
        bundle = tmp_path / "os-bundle.pem"
        ca.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
        return str(bundle)

    return install


# -- details -----------------------------------------------------------------------------------


def test_tls_details_in_data(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("ssl")
    tls = run_session(smtp(server.port), str(certs.ca_pem))["smtp.tls"]
    assert tls.status is Status.OK and not tls.problems
    d = tls.data
    assert d["version"] in ("TLSv1.2", "TLSv1.3") and d["cipher"]
    assert d["subject"] and d["issuer"].startswith("OU=Testing CA")
    assert "127.0.0.1" in d["sans"] and "mail.example.test" in d["sans"]
    assert dt.datetime.fromisoformat(d["not_before"]) < dt.datetime.fromisoformat(d["not_after"])
    assert d["verify_code"] is None and d["verify_message"] is None
    # CPython 3.11 has the chain only through a private method; we read it when present.
    assert d["chain_length"] == 1 or d["chain_note"]
    assert d["chain"][0]["subject"] == d["subject"]
    assert dt.datetime.fromisoformat(d["checked_at"])


def test_failure_keeps_code_and_message(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("ssl", tls=certs.expired)
    tls = run_session(smtp(server.port), str(certs.ca_pem))["smtp.tls"]
    assert tls.status is Status.FAIL and signals(tls) == ["tls.cert_expired"]
    assert tls.data["verify_code"] == 10
    assert "expired" in tls.data["verify_message"]
    assert "os_store" not in tls.data, "expiry is not a trust question: no second handshake"


# -- expiry thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize("days,status", [(40, Status.OK), (10, Status.WARN), (3, Status.FAIL)])
def test_leaf_expiry_thresholds(
    smtp_server: Callable[..., Any], certs: Certs, days: int, status: Status
) -> None:
    server = smtp_server("ssl", tls=certs.expiring(days))
    tls = run_session(smtp(server.port), str(certs.ca_pem))["smtp.tls"]
    assert tls.status is status
    if status is Status.OK:
        assert not tls.problems
    else:
        (p,) = tls.problems
        assert p.signal == "tls.expiring" and p.params["days"] == days
        assert p.params["threshold"] == (7 if status is Status.FAIL else 21)
        assert p.params["position"] == 0


def test_thresholds_follow_the_options(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("ssl", tls=certs.expiring(10))
    assert (
        run_session(smtp(server.port), str(certs.ca_pem), warn_days=5, crit_days=2)[
            "smtp.tls"
        ].status
        is Status.OK
    )
    assert (
        run_session(smtp(server.port), str(certs.ca_pem), warn_days=60, crit_days=30)[
            "smtp.tls"
        ].status
        is Status.FAIL
    )


def _chain_with_short_intermediate(tmp: Path) -> tuple[str, ssl.SSLContext]:
    """root → intermediate (expires in 5 days) → leaf (expires in 200 days), via cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def make(
        subject: str, issuer: str, key: Any, signer: Any, days: int, ca: bool, san: bool = False
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        if san:
            import ipaddress

            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = make("Test Root", "Test Root", root_key, root_key, 3650, True)
    mid = make("Test Intermediate", "Test Root", mid_key, root_key, 5, True)
    leaf = make("mail.test", "Test Intermediate", leaf_key, mid_key, 200, False, san=True)
    pem = serialization.Encoding.PEM
    (tmp / "root.pem").write_bytes(root.public_bytes(pem))
    (tmp / "chain.pem").write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    (tmp / "key.pem").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")
    return str(tmp / "root.pem"), ctx


def test_intermediate_expiry_is_judged(smtp_server: Callable[..., Any], tmp_path: Path) -> None:
    root, ctx = _chain_with_short_intermediate(tmp_path)
    server = smtp_server("ssl", tls=ctx)
    tls = run_session(smtp(server.port), root)["smtp.tls"]
    if tls.data["chain_length"] is None:  # a Python without any chain API: the documented limit
        pytest.skip(tls.data["chain_note"])
    assert tls.data["chain_length"] == 2
    assert [c["subject"] for c in tls.data["chain"]] == ["mail.test", "Test Intermediate"]
    assert tls.data["days_to_expiry"] >= 199, "the leaf itself is far from expiry"
    assert tls.status is Status.FAIL
    (p,) = tls.problems
    assert p.signal == "tls.expiring" and p.params["position"] == 1
    assert p.params["certificate"] == "Test Intermediate" and p.params["days"] in (4, 5)


# -- outdated protocols ----------------------------------------------------------------------------


def test_tls_1_1_only_server_warns(line_server: Callable[..., LineServer]) -> None:
    """OpenSSL 3 handshakes TLS 1.1 only at SECLEVEL 0 on both sides (RSA or ECDSA keys):
    our client context sets it; this server does too, like the old servers it stands for."""
    ca = trustme.CA()
    ctx = server_ctx(ca.issue_cert("127.0.0.1"), max_version=ssl.TLSVersion.TLSv1_1)

    def greet(peer: PeerConn) -> None:
        peer.send("220 old.example.test ESMTP")
        peer.readline()

    server = line_server(greet, tls=ctx)
    with _ca_file(ca) as ca_path:
        tls = run_session(smtp(server.port), ca_path)["smtp.tls"]
    assert tls.data["version"] == "TLSv1.1"
    assert tls.status is Status.WARN
    assert signals(tls) == ["tls.old_protocol"]
    assert tls.problems[0].params["version"] == "TLSv1.1"


class _ca_file:  # noqa: N801 - a tiny context manager
    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca

    def __enter__(self) -> str:
        self._cm = self.ca.cert_pem.tempfile()
        return str(self._cm.__enter__())

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


# -- interception ------------------------------------------------------------------------------


@pytest.fixture
def av_server(smtp_server: Callable[..., Any], av_ca: trustme.CA) -> Iterator[Any]:
    yield smtp_server("ssl", tls=server_ctx(av_ca.issue_cert("127.0.0.1", "localhost")))


def test_antivirus_issuer_is_interception(
    av_server: Any, certs: Certs, interception_rules: str
) -> None:
    # certifi + --ca-file do not know the AV root; the rule base's product list names it
    tls = run_session(smtp(av_server.port), str(certs.ca_pem), rules_dirs=(interception_rules,))[
        "smtp.tls"
    ]
    assert tls.status is Status.FAIL
    assert signals(tls) == ["tls.interception"]
    p = tls.problems[0].params
    assert p["product"] == "Kaspersky" and p["product_known"] is True
    assert "Kaspersky Anti-Virus Personal Root Certificate" in p["issuer"]
    assert tls.data["verify_code"] in (19, 20, 21, 2)
    assert "os_store" not in tls.data, "the issuer name sufficed: no second handshake"


def test_os_store_trust_is_interception(
    smtp_server: Callable[..., Any],
    certs: Certs,
    proxy_ca: trustme.CA,
    os_store: Callable[[trustme.CA], str],
) -> None:
    os_store(proxy_ca)
    server = smtp_server("ssl", tls=server_ctx(proxy_ca.issue_cert("127.0.0.1")))
    tls = run_session(smtp(server.port), str(certs.ca_pem))["smtp.tls"]
    assert signals(tls) == ["tls.interception"]
    p = tls.problems[0].params
    assert p["product"] == "Example Corp" and p["product_known"] is False, "the CA's owner"
    assert "Egress Proxy CA" in p["issuer"] and p["os_store_trusted"] is True
    assert "Egress Proxy CA" in tls.problems[0].text, "the evidence names the issuer"
    assert tls.data["os_store"] == {"verified": True, "verify_code": None, "message": ""}


def test_os_store_check_after_starttls(
    smtp_server: Callable[..., Any],
    certs: Certs,
    proxy_ca: trustme.CA,
    os_store: Callable[[trustme.CA], str],
) -> None:
    os_store(proxy_ca)
    server = smtp_server("starttls", tls=server_ctx(proxy_ca.issue_cert("127.0.0.1")))
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem))
    assert signals(obs["smtp.tls"]) == ["tls.interception"]
    assert obs["smtp.tls"].data["os_store"]["verified"] is True
    assert any("operating system's trust store" in line for line in obs["smtp.tls"].transcript)
    assert obs["smtp.capabilities"].status is Status.OK, "the session carried on"


def test_untrusted_everywhere_stays_untrusted(
    smtp_server: Callable[..., Any],
    certs: Certs,
    proxy_ca: trustme.CA,
    os_store: Callable[[trustme.CA], str],
    interception_rules: str,
) -> None:
    os_store(proxy_ca)  # the OS trusts the proxy CA, not the server's own CA
    server = smtp_server("ssl", tls=certs.self_signed)
    tls = run_session(smtp(server.port), str(certs.ca_pem), rules_dirs=(interception_rules,))[
        "smtp.tls"
    ]
    assert signals(tls) == ["tls.cert_untrusted"]
    assert tls.data["os_store"]["verified"] is False
    assert tls.data["os_store"]["verify_code"] in (19, 20, 21, 2)


def test_interception_only_for_untrusted_chains(certs: Certs) -> None:
    """Expired or wrong-host certificates are not reclassified, whatever their issuer says."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from maildiag.errors import TlsFailed

    ca = trustme.CA(organization_name="Kaspersky Anti-Virus Personal Root Certificate")
    pem = ca.issue_cert("other.example").cert_chain_pems[0].bytes()
    leaf = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    session = TlsSession("TLSv1.3", "TLS_AES_128_GCM_SHA256", leaf)
    facts = ChainFacts((leaf,), "", None, (("Kaspersky", "Kaspersky"),))
    target = smtp(465)
    for code, signal in (
        (62, "tls.hostname_mismatch"),
        (10, "tls.cert_expired"),
        (20, "tls.interception"),
    ):
        raw = "tls.cert_untrusted" if code == 20 else signal  # what errors.classify says
        failure = TlsFailed(
            "certificate verify failed", signal=raw, verify_code=code, verify_message="x"
        )
        obs = judge(
            target,
            session,
            failure,
            now=dt.datetime.now(dt.UTC),
            warn_days=21,
            crit_days=7,
            duration_ms=0,
            facts=facts,
        )
        assert signals(obs) == [signal]


def test_match_product_is_case_insensitive() -> None:
    products = [("kaspersky", "Kaspersky"), ("ESET SSL Filter", "ESET")]
    assert match_product(["CN=ESET SSL Filter CA,O=ESET spol. s r. o."], products) == "ESET"
    assert match_product(["O=AO KASPERSKY LAB"], products) == "Kaspersky"
    assert match_product(["CN=R11,O=Let's Encrypt"], products) is None
