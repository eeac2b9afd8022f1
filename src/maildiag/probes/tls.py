"""Judge a TLS session: protocol version, certificate validity window, hostname, trust.

The handshake itself happens in the session (implicit TLS or after STARTTLS) with a verifying
context; when verification fails the session fetches the chain again without verifying, so this
module can still report what the server sent (STYLE.md 8: fetch the chain even when it is bad).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maildiag.errors import TlsFailed
from maildiag.models import Observation, Problem, Status, Target
from maildiag.net import TlsSession

OLD_PROTOCOLS = {"TLSv1", "TLSv1.1", "SSLv3"}


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
    return {
        "subject": name(cert.subject),
        "issuer": name(cert.issuer),
        "issuer_dn": cert.issuer.rfc4514_string(),
        "sans": sans,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "self_signed": cert.issuer == cert.subject,
    }


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
) -> Observation:
    """The ``<svc>.tls`` observation for one handshake (``failure`` set when it did not verify)."""
    data: dict[str, Any] = {"version": session.version, "cipher": session.cipher}
    problems: list[Problem] = []
    status = Status.OK
    base = {"service": str(target.service), "host": target.host, "port": target.port}
    cert = describe_certificate(session.cert_der) if session.cert_der else None
    days = None
    if cert:
        not_after: dt.datetime = cert["not_after"]
        days = (not_after - now).days
        data.update(
            subject=cert["subject"], issuer=cert["issuer"], sans=cert["sans"],
            not_before=cert["not_before"].isoformat(), not_after=not_after.isoformat(),
            days_to_expiry=days,
        )
    if failure is not None:
        data["verify_code"] = failure.verify_code
        data["verify_message"] = failure.verify_message
        status = Status.FAIL
        params = dict(base, verify_code=failure.verify_code,
                      verify_message=failure.verify_message or "",
                      issuer=cert["issuer"] if cert else "", names=", ".join(cert["sans"]) if cert else "",
                      not_after=data.get("not_after", ""), not_before=data.get("not_before", ""),
                      days=abs(days) if days is not None else "")
        problems.append(Problem(failure.signal, str(failure), params))
    elif days is not None and days <= warn_days:
        status = Status.FAIL if days <= crit_days else Status.WARN
        problems.append(Problem("tls.expiring", f"certificate expires in {days} days",
                                dict(base, days=days, not_after=data["not_after"],
                                     threshold=crit_days if days <= crit_days else warn_days)))
    if session.version in OLD_PROTOCOLS and failure is None:
        status = Status.FAIL if status is Status.FAIL else Status.WARN
        problems.append(Problem("tls.old_protocol", f"the server negotiated {session.version}",
                                dict(base, version=session.version)))
    if failure is not None:
        summary = f"{session.version or 'TLS'}: {failure.verify_message or failure}"
    elif days is not None:
        summary = f"{session.version}, certificate valid for {days} days"
    else:
        summary = f"{session.version}, no certificate"
    return Observation(f"{target.service}.tls", status, summary, target, data, tuple(problems),
                       transcript, duration_ms)
