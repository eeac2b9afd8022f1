"""A certificate described from OpenSSL's decoded form, without cryptography.

After a handshake that verified, the ``ssl`` module already holds every certificate the server
sent, decoded by OpenSSL: ``SSLSocket.getpeercert()`` for the leaf, and the same dictionary from
each certificate of the chain (``Certificate.get_info()``, see ``probes.tls.peer_chain``).
``describe_decoded()`` turns one into exactly what ``probes.tls.describe_certificate`` makes of the
DER with cryptography — subject, issuer (its common name, else the RFC 4514 string), issuer
organisation and DN, DNS and IP SANs, validity — so a healthy check never imports cryptography
(15 MB and ~50 ms at start).

It answers only when the result is sure to be the same: every name attribute is one whose
RFC 4514 spelling is known here (``_ATTRIBUTES``) and every value is ASCII (where OpenSSL's and
cryptography's decodings of the ASN.1 string types agree). Anything else — an attribute OpenSSL
names by its OID, a value in another alphabet, a date it printed otherwise — gives ``None``, and
the caller describes that certificate with cryptography. A test holds the two equal over
certifi's whole bundle and the test certificates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

# OpenSSL's long names of name attributes, as cryptography's ``rfc4514_string`` writes them: the
# nine with an RFC 4514 short name, the others as their dotted OID.
_ATTRIBUTES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "serialNumber": "2.5.4.5",
    "emailAddress": "1.2.840.113549.1.9.1",
    "businessCategory": "2.5.4.15",
    "postalCode": "2.5.4.17",
    "organizationIdentifier": "2.5.4.97",
    "title": "2.5.4.12",
    "surname": "2.5.4.4",
    "givenName": "2.5.4.42",
    "initials": "2.5.4.43",
    "generationQualifier": "2.5.4.44",
    "dnQualifier": "2.5.4.46",
    "pseudonym": "2.5.4.65",
    "jurisdictionLocalityName": "1.3.6.1.4.1.311.60.2.1.1",
    "jurisdictionStateOrProvinceName": "1.3.6.1.4.1.311.60.2.1.2",
    "jurisdictionCountryName": "1.3.6.1.4.1.311.60.2.1.3",
}

Rdns = Sequence[Sequence[Sequence[str]]]  # ((("organizationName", "Example"),), ...)


class _Unsure(Exception):
    """The decoded form cannot be described exactly as cryptography would."""


def describe_decoded(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """``describe_certificate``'s dictionary from OpenSSL's decoded certificate, or None."""
    try:
        subject = _rdns(info.get("subject"))
        issuer = _rdns(info.get("issuer"))
        not_before = _time(info.get("notBefore"))
        not_after = _time(info.get("notAfter"))
        sans = _sans(info.get("subjectAltName", ()))
    except (_Unsure, TypeError, ValueError):
        return None
    org = _first(issuer, "organizationName")
    return {
        "subject": _name(subject),
        "issuer": _name(issuer),
        "issuer_org": org if org is not None else _name(issuer),
        "issuer_dn": _rfc4514(issuer),
        "sans": sans,
        "not_before": not_before,
        "not_after": not_after,
        "self_signed": subject == issuer,
    }


def _rdns(value: Any) -> tuple[tuple[tuple[str, str], ...], ...]:
    if not isinstance(value, tuple):
        raise _Unsure("no name")
    out = []
    for rdn in value:
        avas = []
        for key, text in rdn:
            if key not in _ATTRIBUTES or not isinstance(text, str) or not text.isascii():
                raise _Unsure(key)
            avas.append((key, text))
        if not avas:
            raise _Unsure("empty RDN")
        out.append(tuple(avas))
    return tuple(out)


def _first(rdns: Sequence[Sequence[tuple[str, str]]], key: str) -> str | None:
    for rdn in rdns:
        for k, v in rdn:
            if k == key:
                return v
    return None


def _name(rdns: Sequence[Sequence[tuple[str, str]]]) -> str:
    cn = _first(rdns, "commonName")
    return cn if cn is not None else _rfc4514(rdns)


def _rfc4514(rdns: Sequence[Sequence[tuple[str, str]]]) -> str:
    # RFC 4514 2.1: the RDNs in reverse order; the attributes of one RDN joined by "+"
    return ",".join(
        "+".join(f"{_ATTRIBUTES[k]}={_escape(v)}" for k, v in rdn) for rdn in reversed(rdns)
    )


def _escape(value: str) -> str:
    """RFC 4514 2.4, as cryptography escapes a value."""
    if not value:
        return ""
    for char, escaped in (
        ("\\", "\\\\"),
        ('"', '\\"'),
        ("+", "\\+"),
        (",", "\\,"),
        (";", "\\;"),
        ("<", "\\<"),
        (">", "\\>"),
        ("\0", "\\00"),
    ):
        value = value.replace(char, escaped)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _time(text: Any) -> dt.datetime:
    """OpenSSL's ``ASN1_TIME_print`` form, ``"Jan  5 09:34:43 2018 GMT"``, in UTC."""
    if not isinstance(text, str):
        raise _Unsure("no time")
    parts = text.split()
    if len(parts) != 5 or parts[4] != "GMT" or parts[0] not in _MONTHS:
        raise _Unsure(text)  # fractions of a second, another zone: let cryptography read it
    hour, minute, second = (int(x) for x in parts[2].split(":"))
    return dt.datetime(
        int(parts[3]), _MONTHS[parts[0]], int(parts[1]), hour, minute, second, tzinfo=dt.UTC
    )


def _sans(entries: Any) -> list[str]:
    """DNS names, then IP addresses (as cryptography lists them); other kinds are not shown."""
    import ipaddress

    dns_names: list[str] = []
    ips: list[str] = []
    for kind, value in entries:
        if kind == "DNS":
            if not isinstance(value, str) or not value.isascii():
                raise _Unsure(kind)
            dns_names.append(value)
        elif kind == "IP Address":
            ips.append(str(ipaddress.ip_address(value.strip())))
    return dns_names + ips
