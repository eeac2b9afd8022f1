"""certifi's CA bundle as an OpenSSL hashed directory: a handshake loads the CAs it needs.

``SSLContext.load_verify_locations(cafile=...)`` parses every certificate of the bundle (~120,
~30 ms with OpenSSL 3) before the first handshake, though a chain needs one or two of them. With
``capath=`` OpenSSL looks a CA up by its subject when a chain asks for it, in files named
``<hash>.<n>``: the hash is OpenSSL's ``X509_NAME_hash`` (SHA-1 over the name's canonical
encoding, first four bytes little-endian; ``openssl rehash`` names files the same way).

``hashed_bundle(bundle)`` builds such a directory once per bundle (keyed by its path, size and
mtime) in the cache directory (``maildiag.datacache``: this user's alone, or no cache) and
returns it with the certificates it holds back. Only names whose canonical form is plain are
hashed here: every value a UTF8String, PrintableString or IA5String of printable ASCII, where
OpenSSL's canonical form is simply the text lower-cased with its spaces collapsed. The rest (a
few roots with names in other alphabets or string types) are returned as PEM, for the context to
load eagerly: a CA is never missing because its name was hashed differently. A test holds the
hashes equal to ``openssl x509 -subject_hash`` over certifi's whole bundle.
"""

from __future__ import annotations

import os
import re

FORMAT = 1  # bump when the directory's layout or the hashing changes
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----", re.ASCII
)
# ASN.1 universal tags
_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06
_UTF8, _PRINTABLE, _IA5 = 0x0C, 0x13, 0x16
_PLAIN_TYPES = {_UTF8, _PRINTABLE, _IA5}
_STAMP_FILE = "maildiag-stamp"


class _NotPlain(Exception):
    """A name this module does not hash (its CA is loaded eagerly instead)."""


def hashed_bundle(bundle: str) -> tuple[str, str] | None:
    """(directory of hashed CA files, PEM of the CAs left out), or None when there is no
    private cache directory to keep it in or it cannot be written (then load ``bundle``)."""
    from maildiag import datacache

    base = datacache.cache_dir()
    if not base:
        return None
    try:
        st = os.stat(bundle)
    except OSError:
        return None
    stamp = f"{FORMAT} {os.path.abspath(bundle)} {st.st_size} {st.st_mtime_ns}"
    import zlib

    path = os.path.join(base, f"ca-{zlib.crc32(stamp.encode('utf-8', 'replace')):08x}")
    found = _read(path, stamp)
    if found is not None:
        return path, found
    if not datacache.own_directory(base, create=True):
        return None
    try:
        with open(bundle, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return _build(path, stamp, text)


def _read(path: str, stamp: str) -> str | None:
    """The left-out PEM of a finished directory with this stamp (None: none usable)."""
    from maildiag import datacache

    if not datacache.own_directory(path, create=False):
        return None
    blob = datacache.read(os.path.join(path, _STAMP_FILE), stamp)
    return blob if isinstance(blob, str) else None


def _build(path: str, stamp: str, text: str) -> tuple[str, str] | None:
    import shutil
    import ssl
    import tempfile

    from maildiag import datacache

    pems = _PEM.findall(text)
    if not pems or len(pems) != text.count("-----BEGIN"):
        return None  # something in the bundle this does not read: load the file itself
    try:
        work = tempfile.mkdtemp(prefix=".ca-", dir=os.path.dirname(path))  # mode 0700
    except OSError:
        return None
    try:
        counts: dict[str, int] = {}
        eager: list[str] = []
        for pem in pems:
            try:
                name = subject_hash(ssl.PEM_cert_to_DER_cert(pem))
            except (_NotPlain, ValueError, IndexError):
                eager.append(pem)
                continue
            n = counts.get(name, 0)
            counts[name] = n + 1
            fd = os.open(
                os.path.join(work, f"{name}.{n}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
            )
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(pem + "\n")
        left_out = "\n".join(eager)
        datacache.write(os.path.join(work, _STAMP_FILE), stamp, left_out)
        if not counts or _read(work, stamp) is None:
            return None
        if os.path.lexists(path):
            found = _read(path, stamp)
            if found is not None:  # another run built the same directory meanwhile
                return path, found
            # a broken one under this name: set it aside (a run still reading it keeps its
            # files) and remove it
            aside = tempfile.mkdtemp(prefix=".ca-old-", dir=os.path.dirname(path))
            os.rename(path, os.path.join(aside, "old"))
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(work, path)
    except OSError:
        found = _read(path, stamp)  # another run finished the same directory first
        return (path, found) if found is not None else None
    finally:
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)
    return path, left_out


def subject_hash(der: bytes) -> str:
    """OpenSSL's ``X509_subject_name_hash`` of a DER certificate, as ``%08x``; ``_NotPlain``
    for a name this module leaves to OpenSSL (see the module docstring)."""
    (_, cert_start, cert_end), *_ = _children(der, 0, len(der))
    (_, tbs_start, tbs_end), *_ = _children(der, cert_start, cert_end)
    tbs = _children(der, tbs_start, tbs_end)
    fields = tbs[1:] if der[tbs[0][0]] == 0xA0 else tbs  # [0] version is optional
    # serialNumber, signature, issuer, validity, subject
    tag_at, start, end = fields[4]
    if der[tag_at] != _SEQUENCE:
        raise _NotPlain("no subject")
    canon = b"".join(_canon_rdn(der, s, e) for _, s, e in _children(der, start, end))
    import hashlib

    digest = hashlib.sha1(canon, usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def _canon_rdn(der: bytes, start: int, end: int) -> bytes:
    avas = []
    for tag_at, s, e in _children(der, start, end):
        if der[tag_at] != _SEQUENCE:
            raise _NotPlain("not an attribute")
        parts = _children(der, s, e)
        if len(parts) != 2 or der[parts[0][0]] != _OID:
            raise _NotPlain("not an attribute")
        oid = der[parts[0][0] : parts[0][2]]
        value_at, vs, ve = parts[1]
        if der[value_at] not in _PLAIN_TYPES:
            raise _NotPlain("string type")
        value = der[vs:ve]
        if not all(0x20 <= b < 0x7F for b in value):
            raise _NotPlain("not printable ASCII")
        text = b" ".join(value.split()).lower()  # ASCII: spaces trimmed and collapsed
        avas.append(_tlv(_SEQUENCE, oid + _tlv(_UTF8, text)))
    if not avas:
        raise _NotPlain("empty RDN")
    return _tlv(_SET, b"".join(sorted(avas)))  # DER: a SET OF's members in byte order


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The TLVs inside [start, end): (tag offset, value start, value end) each."""
    out = []
    i = start
    while i < end:
        tag_at = i
        if der[i] & 0x1F == 0x1F:
            raise _NotPlain("long tag")
        i += 1
        first = der[i]
        i += 1
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if not 0 < count <= 4:
                raise _NotPlain("length")
            length = int.from_bytes(der[i : i + count], "big")
            i += count
        if i + length > end:
            raise _NotPlain("truncated")
        out.append((tag_at, i, i + length))
        i += length
    return out
