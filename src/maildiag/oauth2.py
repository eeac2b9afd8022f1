"""OAuth2 logins to mail servers: the SASL messages XOAUTH2 and OAUTHBEARER carry, and the error
a server answers them with.

Two mechanisms carry an OAuth2 access token over SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH:

* XOAUTH2 (Google's, also Microsoft's and Yandex's)::

      user=alice@example.com ^A auth=Bearer <token> ^A ^A          (^A is %x01)

* OAUTHBEARER (RFC 7628 3.1), a GS2 header first::

      n,a=alice@example.com, ^A host=imap.example.com ^A port=993 ^A auth=Bearer <token> ^A ^A

both sent base64-encoded. A server that refuses the token does not say so at once: it sends a
challenge, the base64 of a JSON object (RFC 7628 3.2.2) such as
``{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`` (XOAUTH2 quotes an HTTP
status: 401 invalid token, 403 insufficient scope, 400 otherwise) or
``{"status":"invalid_token","scope":"...","openid-configuration":"https://..."}`` (OAUTHBEARER
quotes the RFC 6750 error code), and waits for the client's answer before its final refusal.
The client answers with a dummy: ``%x01`` for OAUTHBEARER (RFC 7628 3.2.3: ``AQ==``), an empty
response for XOAUTH2 (Google's XOAUTH2 document).

``decode_challenges()`` writes such challenges in a text as the JSON they stand for: the probes
build the text of a refused login with it, and the rule base reads every text through it, so
``maildiag explain`` of a pasted ``334 eyJzdGF0dXMiOi...`` and ``check`` of the same refusal
see the same words.

This module is on ``explain``'s path and imports the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

# preference order when a server offers both: XOAUTH2 is what mail programs use with Gmail,
# Microsoft 365 and Yandex (Microsoft offers nothing else), so its outcome is theirs
MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# the client's answer to an error challenge
DUMMY_RESPONSE = {"XOAUTH2": "", "OAUTHBEARER": base64.b64encode(b"\x01").decode("ascii")}

MAX_TOKEN = 16384  # characters; real access tokens are 100 (Google) to ~4000 (Microsoft)
_MAX_CHALLENGE = 8192  # characters of base64 a challenge may have before we ignore it
_MAX_VALUE = 500  # characters kept of one decoded field
# the fields of an error challenge a finding may quote (RFC 7628 3.2.2, Google's "schemes")
FIELDS = ("status", "schemes", "scope", "openid_configuration")

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
# base64 of a JSON object: '{"' encodes as "eyJ" or "eyI", '{ "' as "eyAi"
_CHALLENGE = re.compile(r"(?<![A-Za-z0-9+/=])ey[IJA][A-Za-z0-9+/]{8,8192}={0,2}(?![A-Za-z0-9+/=])")


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an OAuth2 access token, or None (it is never quoted back)."""
    if len(token) > MAX_TOKEN:
        return f"is longer than {MAX_TOKEN} characters, more than any access token"
    if token[:7].lower() == "bearer ":
        return "starts with 'Bearer ': give the token alone"
    if not _B64TOKEN.match(token):
        return (
            "is not an access token: it may hold only letters, digits and - . _ ~ + / "
            "(and = at its end), no spaces or other characters"
        )
    return None


def xoauth2_message(login: str, token: str) -> str:
    """The XOAUTH2 initial client response, before base64."""
    return f"user={login}\x01auth=Bearer {token}\x01\x01"


def oauthbearer_message(login: str, token: str, host: str, port: int) -> str:
    """The OAUTHBEARER initial client response (RFC 7628 3.1), before base64."""
    # RFC 5801 saslname: "=" and "," are written =3D and =2C
    name = login.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={name},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"


def message(mechanism: str, login: str, token: str, host: str, port: int) -> str:
    if mechanism == "XOAUTH2":
        return xoauth2_message(login, token)
    return oauthbearer_message(login, token, host, port)


def encode(raw: str) -> str:
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def decode_error(challenge: str) -> dict[str, Any] | None:
    """The JSON object a base64 error challenge carries (it has a ``status``), or None."""
    data = challenge.strip()
    if not data or len(data) > _MAX_CHALLENGE:
        return None
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        obj = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("status"), str | int):
        return None
    return obj


def error_facts(obj: dict[str, Any]) -> dict[str, str]:
    """The fields of a decoded challenge a finding may quote (``FIELDS``), as short texts."""
    facts: dict[str, str] = {}
    for key, value in obj.items():
        name = str(key).lower().replace("-", "_")
        if name not in FIELDS or isinstance(value, dict) or value is None:
            continue
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        facts[name] = str(value)[:_MAX_VALUE]
    return facts


def compact(obj: dict[str, Any]) -> str:
    """The decoded challenge as one line of JSON (what rules and reports read)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def decode_challenges(text: str) -> str:
    """``text`` with every base64 OAuth2 error challenge in it written as its JSON."""
    if "ey" not in text:
        return text

    def decoded(m: re.Match[str]) -> str:
        obj = decode_error(m.group())
        return compact(obj) if obj is not None else m.group()

    return _CHALLENGE.sub(decoded, text)
