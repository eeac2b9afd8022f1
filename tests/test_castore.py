"""certifi's bundle as a hashed directory (maildiag.castore): the same hashes as OpenSSL, the same
verdicts as loading the whole file, kept only where this user alone can write."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from maildiag import castore
from maildiag.errors import TlsFailed
from maildiag.net import Conn, certifi_bundle, make_tls_context

OPENSSL = shutil.which("openssl")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("MAILDIAG_CACHE_DIR", str(directory))
    return directory


def openssl_hash(pem: str) -> str:
    assert OPENSSL is not None
    out = subprocess.run(
        [OPENSSL, "x509", "-noout", "-subject_hash"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command to compare with")
def test_hashes_are_openssls_over_certifis_bundle() -> None:
    pems = castore._PEM.findall(Path(certifi_bundle()).read_text(encoding="ascii"))
    hashed = 0
    for pem in pems:
        try:
            ours = castore.subject_hash(ssl.PEM_cert_to_DER_cert(pem))
        except castore._NotPlain:
            continue
        hashed += 1
        assert ours == openssl_hash(pem)
    assert hashed >= len(pems) - 5  # the rest are loaded eagerly


def ca_named(attributes: list[list[tuple[Any, str]]]) -> tuple[str, Any, Any]:
    """A self-signed CA with this subject: (PEM, key, name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn])
            for rdn in attributes
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key, name


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command to compare with")
def test_hashes_of_odd_plain_names_are_openssls() -> None:
    from cryptography.x509.oid import NameOID

    names = [
        [[(NameOID.COMMON_NAME, "  Mixed   CASE  Root\tCA ")]],
        [[(NameOID.ORGANIZATION_NAME, "B Org"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "A Unit")]],
        [[(NameOID.STREET_ADDRESS, "Long Street " * 20)], [(NameOID.COUNTRY_NAME, "RU")]],
        [[(NameOID.DOMAIN_COMPONENT, "Example")], [(NameOID.EMAIL_ADDRESS, "CA@Example.Test")]],
    ]
    for attributes in names:
        pem, _, _ = ca_named(attributes)
        der = ssl.PEM_cert_to_DER_cert(pem)
        try:
            ours = castore.subject_hash(der)
        except castore._NotPlain:
            continue  # a tab is not printable: loaded eagerly, which is also right
        assert ours == openssl_hash(pem), attributes


# -- verdicts through the directory ---------------------------------------------------------


@pytest.fixture
def tls_server() -> Iterator[Any]:
    """``serve(ctx)`` -> port of a loopback TLS server that handshakes and closes."""
    socks: list[socket.socket] = []

    def serve(ctx: ssl.SSLContext) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        socks.append(listener)

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"+OK\r\n")
                except (OSError, ssl.SSLError):
                    pass

        threading.Thread(target=loop, daemon=True).start()
        return int(listener.getsockname()[1])

    yield serve
    for s in socks:
        s.close()


def handshake(port: int, ctx: ssl.SSLContext) -> int | None:
    """None when the chain verified, else OpenSSL's verify code."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = Conn(sock, timeout=5, peer=f"127.0.0.1:{port}")
    try:
        conn.start_tls(ctx, "mail.example.test")
        return None
    except TlsFailed as exc:
        return exc.verify_code
    finally:
        conn.close()


def bundle_with(tmp_path: Path, *pems: str) -> Path:
    """A bundle like certifi's: comments, then our CAs among some of certifi's own."""
    certifi_pems = castore._PEM.findall(Path(certifi_bundle()).read_text(encoding="ascii"))
    path = tmp_path / "bundle.pem"
    parts = [f"# Issuer: CN=test {i}\n{p}\n" for i, p in enumerate([*certifi_pems[:20], *pems])]
    path.write_text("\n".join(parts), encoding="ascii")
    return path


def context_for(bundle: Path) -> ssl.SSLContext:
    hashed = castore.hashed_bundle(str(bundle))
    assert hashed is not None
    ctx = make_tls_context(verify=False)
    ctx.check_hostname, ctx.verify_mode = True, ssl.CERT_REQUIRED
    ctx.load_verify_locations(capath=hashed[0])
    if hashed[1]:
        ctx.load_verify_locations(cadata=hashed[1])
    return ctx


def test_chain_verifies_through_the_directory_and_only_its_cas(
    tmp_path: Path, tls_server: Any
) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("mail.example.test").configure_cert(server)
    port = tls_server(server)
    trusting = context_for(bundle_with(tmp_path, ca.cert_pem.bytes().decode()))
    assert handshake(port, trusting) is None
    other = tmp_path / "other"
    other.mkdir()
    not_trusting = context_for(bundle_with(other, stranger.cert_pem.bytes().decode()))
    assert handshake(port, not_trusting) == 20  # unable to get local issuer certificate


def test_ca_with_a_name_not_hashed_here_is_loaded_eagerly(tmp_path: Path, tls_server: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_pem, ca_key, ca_name = ca_named([[(NameOID.COMMON_NAME, "Корневой УЦ")]])
    with pytest.raises(castore._NotPlain):
        castore.subject_hash(ssl.PEM_cert_to_DER_cert(ca_pem))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.test")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "leaf.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem")
    port = tls_server(server)
    hashed = castore.hashed_bundle(str(bundle_with(tmp_path, ca_pem)))
    assert hashed is not None and ca_pem.strip() in hashed[1]
    assert handshake(port, context_for(tmp_path / "bundle.pem")) is None


# -- built once, kept safely -----------------------------------------------------------------


def test_directory_is_built_once_per_bundle_and_again_when_it_changes(
    tmp_path: Path, _cache: Path
) -> None:
    bundle = bundle_with(tmp_path)
    first = castore.hashed_bundle(str(bundle))
    assert first is not None
    directory = Path(first[0])
    assert directory.parent == _cache and (directory.stat().st_mode & 0o077) == 0
    files = [p for p in directory.iterdir() if p.name[-2:-1] == "."]
    assert len(files) + first[1].count("BEGIN CERTIFICATE") == 20  # hashed, or left out
    marker = directory / "00000000.0"
    marker.write_text("not rebuilt")  # a second call reuses the directory as it is
    assert castore.hashed_bundle(str(bundle)) == first and marker.exists()
    bundle.write_text(bundle.read_text() + "\n# changed\n")
    second = castore.hashed_bundle(str(bundle))
    assert second is not None and second[0] != first[0]


def test_no_directory_where_others_could_write(tmp_path: Path, _cache: Path) -> None:
    _cache.mkdir(mode=0o777)
    os.chmod(_cache, 0o777)  # world-writable: whoever can write there could add a CA
    assert castore.hashed_bundle(str(bundle_with(tmp_path))) is None
    ctx = make_tls_context()  # falls back to the whole file
    assert len(ctx.get_ca_certs()) > 100


def test_unreadable_bundle_parts_mean_the_whole_file(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path)
    bundle.write_text(bundle.read_text() + "-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n")
    assert castore.hashed_bundle(str(bundle)) is None
