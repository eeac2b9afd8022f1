"""Judge a TLS session: protocol version, chain, validity windows, hostname, trust, interception.

The handshake itself happens in the session (implicit TLS or after STARTTLS) with a verifying
context (certifi plus ``--ca-file``); when verification fails the session fetches the chain again
without verifying, so this module can still report what the server sent (STYLE.md 8: fetch the
chain even when it is bad).

``assess()`` gathers what ``judge()`` needs beyond the handshake, with the network when it must:

- the chain the server sent. Python 3.11 has no public API for it; CPython 3.10-3.12 carry the
  private ``SSLObject.get_unverified_chain()`` (public from 3.13), used when present. Without it
  the chain is the leaf alone and ``chain_note`` says so;
- for an untrusted chain (OpenSSL codes 2, 19, 20, 21), whether the operating system's trust store
  (``load_default_certs()``: OpenSSL's default paths, honouring ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR``; the system stores on Windows) accepts it — one more handshake, inside the
  session so it counts toward the per-host connection cap — and whether an issuer in the chain
  names a known inspection product (``interception:`` in rules/*.yaml). Either makes it
  ``tls.interception`` instead of ``tls.cert_untrusted``.

``judge()`` itself is a pure function of those facts. Expiry thresholds apply to the leaf and to
every intermediate the server sent (a self-signed root it sends is ignored, as clients ignore it).
Judging the windows by the reference clock is ``clock.reconcile()``'s job, after every check ran:
``data.checked_at`` records the local time the certificates were judged at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maildiag.errors import NetError, ProtocolViolation, TlsFailed
from maildiag.models import Observation, Problem, Security, Status, Summary, Target, TlsFacts
from maildiag.net import TlsSession

if TYPE_CHECKING:
    from maildiag.dnsclient import Dns
    from maildiag.net import Conn

OLD_PROTOCOLS = {"TLSv1", "TLSv1.1", "SSLv3"}
# OpenSSL X509_V_ERR_*: unable to get issuer (2), self-signed in chain (19), unable to get local
# issuer (20), unable to verify leaf signature (21): the chain ends at a root we do not trust.
UNTRUSTED_CODES = frozenset({2, 19, 20, 21})
MAX_CHAIN = 10  # certificates described; a server sending more is odd, and we stay bounded


def describe_certificate(der: bytes) -> dict[str, Any]:
    """Subject, issuer, SANs and validity of a DER certificate (cryptography)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)

    def name(n: x509.Name) -> str:
        cn = n.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cn[0].value) if cn else n.rfc4514_string()

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    org = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return {
        "subject": name(cert.subject),
        "issuer": name(cert.issuer),
        "issuer_org": str(org[0].value) if org else name(cert.issuer),
        "issuer_dn": cert.issuer.rfc4514_string(),
        "sans": sans,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "self_signed": cert.issuer == cert.subject,
    }


@dataclass(frozen=True, slots=True)
class OsStoreCheck:
    """The second handshake against the operating system's trust store."""

    verified: bool
    verify_code: int | None = None
    message: str = ""  # why it did not verify, or why it could not be tried


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What ``judge()`` needs beyond the handshake (see ``assess()``)."""

    chain: tuple[bytes, ...] = ()  # DER, leaf first, as the server sent it; () when unknown
    chain_note: str = ""  # why ``chain`` is missing
    os_store: OsStoreCheck | None = None  # None: not tried (not needed, or not possible)
    products: tuple[tuple[str, str], ...] = ()  # (issuer substring, product) from rules/
    # After a handshake that verified: OpenSSL's decoded form of the leaf (``getpeercert()``)
    # and of each certificate of ``chain`` (None where not had). ``judge()`` describes them
    # from these (``maildiag.certinfo``), and parses DER with cryptography only without them.
    leaf_decoded: Mapping[str, Any] | None = None
    decoded: tuple[Mapping[str, Any] | None, ...] = ()


def peer_chain(conn: Conn | None) -> tuple[tuple[bytes, ...], str]:
    """The certificates the server sent (DER, leaf first), or () and the reason."""
    chain, note, _ = _peer_chain(conn, decode=False)
    return chain, note


def _peer_chain(
    conn: Conn | None, *, decode: bool
) -> tuple[tuple[bytes, ...], str, tuple[Mapping[str, Any] | None, ...]]:
    """``peer_chain()``, and with ``decode`` OpenSSL's decoded form of each certificate."""
    sock = getattr(conn, "sock", None)
    if not isinstance(sock, ssl.SSLSocket):
        return (), "no TLS socket to read the chain from", ()
    try:
        # the certificate objects behind the public API of 3.13 (which gives DER only); they
        # carry the decoded form too
        private = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
        if private is None:
            public = getattr(sock, "get_unverified_chain", None)
            if public is not None:
                return tuple(bytes(c) for c in public()[:MAX_CHAIN]), "", ()
            return (), "this Python exposes only the leaf certificate", ()
        certs = (private() or [])[:MAX_CHAIN]
        der = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009 - private constant, 3.10-3.12
        chain = tuple(c.public_bytes(der) for c in certs)
        decoded: tuple[Mapping[str, Any] | None, ...] = ()
        if decode:
            decoded = tuple(_decoded(c) for c in certs)
        return chain, "", decoded
    except (AttributeError, TypeError, ValueError, ssl.SSLError) as exc:
        return (), f"the chain could not be read: {exc}", ()


def _decoded(cert: Any) -> Mapping[str, Any] | None:
    get_info = getattr(cert, "get_info", None)
    if get_info is None:
        return None
    try:
        info = get_info()
    except (ValueError, ssl.SSLError):
        return None
    return info if isinstance(info, dict) else None


def os_store_context() -> ssl.SSLContext:
    """A verifying context trusting only what the operating system trusts."""
    import warnings

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():  # TLS 1.0 is deprecated: we allow it only to report it
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    with contextlib.suppress(ssl.SSLError):  # OpenSSL builds without SECLEVEL syntax
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)  # default paths; SSL_CERT_FILE/_DIR
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check_os_store(
    target: Target, mode: Security, *, timeout: float, dns: Dns | None, transcript: list[str]
) -> OsStoreCheck:
    """Handshake once more, in the mode the port really speaks, against the OS trust store."""
    from maildiag.net import connect
    from maildiag.probes.dialects import make_dialect

    transcript.append("-- again, verifying against the operating system's trust store --")
    try:
        ctx = os_store_context()
    except (ssl.SSLError, OSError) as exc:
        return OsStoreCheck(False, None, f"the system trust store could not be loaded: {exc}")
    try:
        conn = connect(target.host, target.port, timeout=timeout, dns=dns, transcript=transcript)
    except NetError as exc:
        return OsStoreCheck(False, None, f"could not connect again: {exc}")
    try:
        if mode is Security.STARTTLS:
            dialect = make_dialect(target.service)
            greeting = dialect.greeting(conn)
            dialect.capabilities(conn, greeting)
            if not dialect.starttls(conn).ok:
                return OsStoreCheck(False, None, "STARTTLS refused on the second connection")
        conn.start_tls(ctx, target.host)
        return OsStoreCheck(True)
    except TlsFailed as exc:
        return OsStoreCheck(False, exc.verify_code, exc.verify_message or str(exc))
    except (NetError, ProtocolViolation) as exc:
        return OsStoreCheck(False, None, f"the second handshake failed: {exc}")
    finally:
        conn.close()


def match_product(issuers: Sequence[str], products: Sequence[tuple[str, str]]) -> str | None:
    """The inspection product an issuer in the chain names, if any (``interception:`` in
    rules/*.yaml: an issuer containing the substring, case-insensitively)."""
    for issuer in issuers:
        low = issuer.lower()
        for needle, product in products:
            if needle and needle.lower() in low:
                return product
    return None


def assess(
    target: Target,
    conn: Conn | None,
    session: TlsSession,
    failure: TlsFailed | None,
    mode: Security,
    *,
    timeout: float,
    dns: Dns | None,
    transcript: list[str],
    products: Sequence[tuple[str, str]],
) -> ChainFacts:
    """The chain, and for an untrusted one the interception evidence (may handshake again)."""
    if failure is None:
        chain, note, decoded = _peer_chain(conn, decode=True)
        sock = getattr(conn, "sock", None)
        leaf = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        return ChainFacts(chain, note, leaf_decoded=leaf or None, decoded=decoded)
    chain, note = peer_chain(conn)
    if failure.verify_code not in UNTRUSTED_CODES:
        return ChainFacts(chain, note)
    issuers = [
        describe_certificate(d)["issuer_dn"] for d in chain or (session.cert_der or b"",) if d
    ]
    known = tuple(products)
    if match_product(issuers, known):
        return ChainFacts(chain, note, None, known)  # the issuer says it: no second handshake
    os_store = check_os_store(target, mode, timeout=timeout, dns=dns, transcript=transcript)
    return ChainFacts(chain, note, os_store, known)


def _describe(der: bytes, decoded: Mapping[str, Any] | None) -> dict[str, Any]:
    """A certificate described from OpenSSL's decoded form when it is had and suffices, else
    from its DER by cryptography."""
    if decoded is not None:
        from maildiag.certinfo import describe_decoded

        described = describe_decoded(decoded)
        if described is not None:
            return described
    return describe_certificate(der)


def _chain_entries(
    chain: Sequence[bytes],
    now: dt.datetime,
    decoded: Sequence[Mapping[str, Any] | None] = (),
) -> list[dict[str, Any]]:
    entries = []
    for position, der in enumerate(chain):
        try:
            c = _describe(der, decoded[position] if position < len(decoded) else None)
        except ValueError:
            entries.append({"position": position, "error": "unparsable certificate"})
            continue
        entries.append(
            {
                "position": position,
                "subject": c["subject"],
                "issuer": c["issuer"],
                "issuer_dn": c["issuer_dn"],
                "issuer_org": c["issuer_org"],
                "not_before": c["not_before"].isoformat(),
                "not_after": c["not_after"].isoformat(),
                "days_to_expiry": (c["not_after"] - now).days,
                "self_signed": c["self_signed"],
            }
        )
    return entries


def judge(
    target: Target,
    session: TlsSession,
    failure: TlsFailed | None,
    *,
    now: dt.datetime,
    warn_days: int,
    crit_days: int,
    duration_ms: int,
    transcript: tuple[str, ...] = (),
    facts: ChainFacts | None = None,
) -> Observation:
    """The ``<svc>.tls`` observation for one handshake (``failure`` set when it did not verify)."""
    facts = facts or ChainFacts(chain_note="no chain was gathered")
    data: dict[str, Any] = {
        "version": session.version,
        "cipher": session.cipher,
        "checked_at": now.isoformat(),
        "warn_days": warn_days,
        "crit_days": crit_days,
    }
    problems: list[Problem] = []
    status = Status.OK
    base = {"service": str(target.service), "host": target.host, "port": target.port}
    # what OpenSSL decoded is used only for a chain it verified
    leaf_decoded = facts.leaf_decoded if failure is None else None
    decoded = list(facts.decoded) if failure is None else []
    cert = _describe(session.cert_der, leaf_decoded) if session.cert_der else None
    chain = list(facts.chain)
    if session.cert_der and (not chain or chain[0] != session.cert_der):
        chain = [session.cert_der]  # the leaf alone is what we surely know
        decoded = [leaf_decoded]
    entries = _chain_entries(chain, now, decoded if len(decoded) == len(chain) else ())
    data["chain"] = entries
    data["chain_length"] = len(facts.chain) if facts.chain else None
    if not facts.chain:
        data["chain_note"] = facts.chain_note or "the chain was not available"
    days = None
    if cert:
        not_after: dt.datetime = cert["not_after"]
        days = (not_after - now).days
        data.update(
            subject=cert["subject"],
            issuer=cert["issuer"],
            issuer_dn=cert["issuer_dn"],
            sans=cert["sans"],
            not_before=cert["not_before"].isoformat(),
            not_after=not_after.isoformat(),
            days_to_expiry=days,
        )
    data["verify_code"] = failure.verify_code if failure is not None else None
    data["verify_message"] = failure.verify_message if failure is not None else None
    if facts.os_store is not None:
        data["os_store"] = {
            "verified": facts.os_store.verified,
            "verify_code": facts.os_store.verify_code,
            "message": facts.os_store.message,
        }
    if failure is not None:
        status = Status.FAIL
        params = dict(
            base,
            verify_code=failure.verify_code,
            verify_message=failure.verify_message or "",
            issuer=cert["issuer"] if cert else "",
            names=", ".join(cert["sans"]) if cert else "",
            not_after=data.get("not_after", ""),
            not_before=data.get("not_before", ""),
            days=abs(days) if days is not None else "",
        )
        intercepted = _interception(failure, entries, facts)
        if intercepted is not None:
            data["interception"] = intercepted
            text = f"{failure}; issuer: {intercepted['issuer_dn']}"
            problems.append(Problem("tls.interception", text, dict(params, **intercepted)))
        else:
            problems.append(Problem(failure.signal, str(failure), params))
    else:
        expiring = _expiring(entries, warn_days)
        if expiring is not None:
            edays = expiring["days_to_expiry"]
            status = Status.FAIL if edays <= crit_days else Status.WARN
            problems.append(
                Problem(
                    "tls.expiring",
                    # the evidence: which certificate, and its notAfter
                    f"{expiring['subject']}: notAfter {expiring['not_after']}",
                    dict(
                        base,
                        days=edays,
                        not_after=expiring["not_after"],
                        threshold=crit_days if edays <= crit_days else warn_days,
                        certificate=expiring["subject"],
                        position=expiring["position"],
                    ),
                )
            )
    if session.version in OLD_PROTOCOLS and failure is None:
        status = Status.FAIL if status is Status.FAIL else Status.WARN
        problems.append(
            Problem(
                "tls.old_protocol",
                session.version,
                dict(base, version=session.version),
            )
        )
    version = session.version or "TLS"
    shown: dict[str, Any] = {"version": version}
    if failure is not None and "interception" in data:
        product = data["interception"].get("product")
        key = "tls.intercepted" if product else "tls.intercepted_unknown"
        shown["product"] = product or ""
    elif failure is not None:
        key = _VERIFY_KEYS.get(failure.signal, "tls.verify_failed")
        shown["detail"] = failure.verify_message or str(failure)
    elif days is not None:
        key = "tls.ok"
        shown["days"] = days
    else:
        key = "tls.no_certificate"
    tls_facts = TlsFacts(
        checked_at=now,
        warn_days=warn_days,
        crit_days=crit_days,
        days_to_expiry=days,
        windows=_windows(entries, cert),
    )
    return Observation(
        f"{target.service}.tls",
        status,
        Summary(key, shown),
        target,
        data,
        tuple(problems),
        transcript,
        duration_ms,
        tls_facts,
    )


def _windows(
    entries: list[dict[str, Any]], cert: dict[str, Any] | None
) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """Validity windows of the certificates judged: the leaf and every intermediate sent."""
    judged = tuple(
        (dt.datetime.fromisoformat(e["not_before"]), dt.datetime.fromisoformat(e["not_after"]))
        for e in entries
        if "not_after" in e and (e["position"] == 0 or not e["self_signed"])
    )
    if judged or cert is None:
        return judged
    return ((cert["not_before"], cert["not_after"]),)


# summary keys of a certificate that did not verify, by the failure's signal
_VERIFY_KEYS = {
    "tls.cert_expired": "tls.cert_expired",
    "tls.cert_not_yet_valid": "tls.cert_not_yet_valid",
    "tls.hostname_mismatch": "tls.hostname_mismatch",
    "tls.cert_untrusted": "tls.cert_untrusted",
}


def _interception(
    failure: TlsFailed, entries: list[dict[str, Any]], facts: ChainFacts
) -> dict[str, Any] | None:
    """Params of a ``tls.interception`` problem, or None when the failure is not one."""
    if failure.verify_code not in UNTRUSTED_CODES:
        return None
    issuers = [e["issuer_dn"] for e in entries if "issuer_dn" in e]
    product = match_product(issuers, facts.products)
    os_trusted = facts.os_store is not None and facts.os_store.verified
    if product is None and not os_trusted:
        return None
    # The top of the sent chain names the inspecting CA (the leaf's issuer when sent alone).
    # Without a known product, the CA's organisation is the best name for who intercepts.
    top = entries[-1] if entries else {}
    return {
        "product": product or top.get("issuer_org", ""),
        "product_known": bool(product),
        "issuer": top.get("issuer", ""),
        "issuer_dn": top.get("issuer_dn", ""),
        "os_store_trusted": os_trusted,
        "evidence": "issuer" if product else "os_store",
    }


def _expiring(entries: list[dict[str, Any]], warn_days: int) -> dict[str, Any] | None:
    """The certificate closest to expiry within ``warn_days``: the leaf and the intermediates."""
    judged = [
        e for e in entries if "days_to_expiry" in e and (e["position"] == 0 or not e["self_signed"])
    ]
    soonest = min(judged, key=lambda e: e["days_to_expiry"], default=None)
    if soonest is None or soonest["days_to_expiry"] > warn_days:
        return None
    return soonest
