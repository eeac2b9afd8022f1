"""Runs a person meets, against loopback peers: the report tests (text, HTML, encodings) share them.

- ``healthy``: SMTP (465, wants AUTH before MAIL, as Yandex does), IMAP (993) and POP3 (995),
  no password: every check ok or skipped, one note ("logs in before sending").
- ``two_failures``: the same servers with the password: SMTP refuses a From address the login
  does not own, POP3 access is switched off for the mailbox (IMAP takes the same password).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from test_auth_support import YandexLike

ALICE = "alice@example.test"
PASSWORD = "loopback-secret"
ENV = {"MAILDIAG_TEST_PASSWORD": PASSWORD}
POP3_OFF = "-ERR Login failure or POP3 disabled, try later."


def servers(
    smtp_peers: Callable[..., Any],
    imap_server: Callable[..., Any],
    pop3_server: Callable[..., Any],
    certs: Any,
) -> tuple[list[str], list[str]]:
    """The arguments of a healthy run and of a run with two failures."""
    users = {ALICE: PASSWORD}
    smtp = smtp_peers(YandexLike(), mode="ssl", users=users, auth_require_tls=False)
    imap = imap_server(implicit_tls=True, users=users)
    pop3 = pop3_server(
        implicit_tls=True, users=users, denied=frozenset({ALICE}), deny_text=POP3_OFF
    )
    base = [
        "check",
        ALICE,
        "--smtp",
        f"127.0.0.1:{smtp.port}/ssl",
        "--imap",
        f"127.0.0.1:{imap.port}/ssl",
        "--pop3",
        f"127.0.0.1:{pop3.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
    ]
    failing = [
        *base,
        "--password-env",
        "MAILDIAG_TEST_PASSWORD",
        "--from",
        "bob@example.test",
    ]
    return base, failing
