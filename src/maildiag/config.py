"""The frozen configuration of one run (one mailbox checked), built from the options
(``maildiag.options.check_config``).

The password, or the OAuth2 access token that replaces it (``--oauth2-token-env``), lives here with
``repr=False``: the login stage is the only code that reads it, and no string is ever formatted
from it. Limits (timeouts, read bounds, caps) live here too, so a test
can shrink them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maildiag.models import Security, Service, Target

# Bounds on what a server can make us read (see the SPEC's safety section).
MAX_LINE = 8192  # one protocol line; RFC 5321 allows 512 for replies, IMAP lines can be longer
MAX_REPLY_LINES = 256  # one multi-line reply (EHLO, CAPA)
MAX_REPLY_BYTES = 64 * 1024  # one whole reply


@dataclass(frozen=True, slots=True)
class RunConfig:
    address: str
    explicit: tuple[Target, ...] = ()  # --smtp/--imap/--pop3
    only: frozenset[Service] = frozenset(Service)
    login: str | None = None  # --login; None: provider rules decide, else the address
    password: str | None = field(default=None, repr=False)
    oauth2_token: str | None = field(default=None, repr=False)  # instead of a password
    sender: str | None = None  # --from
    ca_file: str | None = None
    resolver: str | None = None
    time_server: str | None = None
    check_clock: bool = True
    timeout: float = 10.0
    warn_days: int = 21
    crit_days: int = 7
    lang: str = "en"
    transcript: bool = False
    rules_dirs: tuple[str, ...] = ()
    # concurrent connections to one host and service: mail servers ban eager clients
    max_per_host: int = 2
    # the whole run's limit in seconds when someone waits for it (the exporter: the scrape's
    # timeout); None: what the timeouts allow
    run_limit: float | None = None
    alternatives: bool = True  # try other servers and ports when one fails (--no-alternatives)
    server: bool = False  # ``check HOST[:PORT]``: a server without a mailbox (address = HOST...)
    # server mode: the services that must answer (named by --only, or the one PORT given); the
    # others may simply not be offered
    required: frozenset[Service] = frozenset()

    @property
    def has_secret(self) -> bool:
        """A password or a token was given: the logins run."""
        return self.password is not None or self.oauth2_token is not None

    @property
    def deadline(self) -> float:
        if self.run_limit is not None:
            return self.run_limit
        # discovery + the slowest dependent chain (connect, greeting, TLS, STARTTLS,
        # capabilities, auth, sender) can each take one timeout
        return self.timeout * 12 + 5


def explicit_security(port: int) -> Security:
    """The mode a port implies when the user gave none (SPEC: --smtp/--imap/--pop3)."""
    if port in (465, 993, 995):
        return Security.SSL
    if port in (25, 587, 2525, 143, 110):
        return Security.STARTTLS
    return Security.AUTO


DEFAULT_PORTS = {
    (Service.SMTP, Security.SSL): 465,
    (Service.SMTP, Security.STARTTLS): 587,
    (Service.SMTP, Security.PLAIN): 25,
    (Service.IMAP, Security.SSL): 993,
    (Service.IMAP, Security.STARTTLS): 143,
    (Service.IMAP, Security.PLAIN): 143,
    (Service.POP3, Security.SSL): 995,
    (Service.POP3, Security.STARTTLS): 110,
    (Service.POP3, Security.PLAIN): 110,
}
