"""The exception tree, and the one place that maps lower-layer errors onto it.

    MaildiagError                 anything we raise on purpose
    ├── UsageError                bad input: not an address, bad option value (exit 3)
    ├── NetError                  a network step failed; .signal names it for the rules
    │   ├── ConnectFailed         connect.refused / connect.timeout / connect.unreachable
    │   ├── StepTimeout           no (complete) answer within the step's timeout
    │   ├── Closed                the peer closed the connection
    │   ├── TooLong               a line or reply over its size bound (hostile or broken peer)
    │   └── TlsFailed             handshake failure; .verify_code/.verify_message when the
    │                             certificate was the reason
    └── ProtocolViolation         the peer's bytes are not the protocol we expected
        └── UnsafeLine            a line we were about to send holds CR, LF or NUL: refused,
                                  since the server would read it as more than one command

``classify(exc)`` turns socket, ssl and dns exceptions into a ``NetError`` with the original
words kept verbatim, so probes never write ten ``except`` clauses of their own.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """What the process returns: Nagios plugin semantics, so CI and monitoring read them alike."""

    OK = 0
    WARN = 1  # warnings only
    FAIL = 2  # at least one check failed
    ERROR = 3  # the diagnosis could not run: bad input, an unreadable rule base or targets file


class MaildiagError(Exception):
    """Base of everything maildiag raises on purpose."""


class UsageError(MaildiagError):
    """Bad input from the user; the message is the one line the CLI prints (exit 3)."""


class NetError(MaildiagError):
    signal = "connect.refused"

    def __init__(self, message: str, *, signal: str | None = None) -> None:
        super().__init__(message)
        if signal:
            self.signal = signal


class ConnectFailed(NetError):
    pass


class StepTimeout(NetError):
    signal = "connect.timeout"


class Closed(NetError):
    signal = "greeting.closed"


class TooLong(NetError):
    signal = "greeting.wrong_protocol"


class TlsFailed(NetError):
    signal = "tls.handshake_failed"

    def __init__(
        self,
        message: str,
        *,
        signal: str | None = None,
        verify_code: int | None = None,
        verify_message: str | None = None,
    ) -> None:
        super().__init__(message, signal=signal)
        self.verify_code = verify_code
        self.verify_message = verify_message


class ProtocolViolation(MaildiagError):
    """The peer does not speak the protocol we expected; message says what it sent."""


class UnsafeLine(ProtocolViolation):
    """We refused to send a line: a CR, LF or NUL in it would smuggle a second command.

    Input is validated before any connection (``checking.validate_login``), so reaching this is
    a bug or data from a hostile source (an autoconfig file, a provider entry); the message never
    quotes the line, which may hold the secret.
    """


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h)
X509_NOT_YET_VALID = 9
X509_EXPIRED = 10
X509_HOSTNAME_MISMATCH = 62
X509_IP_MISMATCH = 64
_EXPIRY_CODES = {
    X509_NOT_YET_VALID: "tls.cert_not_yet_valid",
    X509_EXPIRED: "tls.cert_expired",
    11: "tls.cert_not_yet_valid",
    12: "tls.cert_expired",
}  # 11/12: CRL dates


def classify(exc: BaseException, *, phase: str, address: str = "") -> NetError:
    """Map a lower-layer exception raised in ``phase`` ("connect", "read", "tls") to a NetError."""
    import socket
    import ssl

    if isinstance(exc, NetError):
        return exc
    where = f" ({address})" if address else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = exc.verify_message or str(exc)
        if code in (X509_HOSTNAME_MISMATCH, X509_IP_MISMATCH):
            signal = "tls.hostname_mismatch"
        else:
            signal = _EXPIRY_CODES.get(code, "tls.cert_untrusted")
        return TlsFailed(
            f"certificate verify failed: {message}",
            signal=signal,
            verify_code=code,
            verify_message=message,
        )
    if isinstance(exc, (TimeoutError, socket.timeout)):
        if phase == "connect":
            return ConnectFailed(f"connect timed out{where}", signal="connect.timeout")
        if phase == "tls":
            return TlsFailed(f"TLS handshake timed out{where}", signal="connect.timeout")
        return StepTimeout(f"no answer in time{where}")
    if isinstance(exc, ssl.SSLError):
        text = exc.reason or str(exc)
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return TlsFailed(f"the server closed the connection during TLS: {exc}")
        return TlsFailed(f"TLS failed: {text}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"connection refused{where}", signal="connect.refused")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        if phase == "connect":
            return ConnectFailed(f"connection reset{where}", signal="connect.refused")
        if phase == "tls":
            return TlsFailed(f"the server reset the connection during TLS{where}")
        return Closed(f"the server reset the connection{where}")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(
            f"cannot resolve {address}: {exc.strerror}", signal="dns.host_unresolved"
        )
    if isinstance(exc, OSError):
        unreachable = (
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.EADDRNOTAVAIL,
            errno.ENETDOWN,
            errno.EAFNOSUPPORT,
        )
        if exc.errno in unreachable:
            return ConnectFailed(f"{exc.strerror or exc}{where}", signal="connect.unreachable")
        if exc.errno == errno.ETIMEDOUT:
            return ConnectFailed(f"connect timed out{where}", signal="connect.timeout")
        if exc.errno == errno.ECONNREFUSED:
            return ConnectFailed(f"connection refused{where}", signal="connect.refused")
        return NetError(
            f"{exc.strerror or exc}{where}",
            signal="connect.unreachable" if phase == "connect" else "greeting.closed",
        )
    return NetError(f"{type(exc).__name__}: {exc}", signal="check.internal_error")
