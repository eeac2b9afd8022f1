"""Every option of every command, declared once: the command line, the targets file and the
run configuration all read these declarations.

An ``Option`` names its flags, its help, how a raw value becomes a checked one (``parse``: the same
function for ``--timeout 5`` on the command line and ``timeout: 5`` in a targets file), and where
else it may appear: ``config`` is its key in a targets file (``None``: command line only), and
``scope`` says whether it belongs to one mailbox (a target only), may also be a file-wide default,
or concerns the whole run (command line only). ``cli.py`` builds its parsers from ``COMMANDS``;
``targets.py`` reads the keys a targets file may hold from ``CHECK``; ``check_config()`` turns the
parsed values into the frozen ``RunConfig``. docs/reference.md lists them all (a test holds it to
these declarations).

A ``parse`` function raises ``OptionError`` with the reason only; the caller says where the value
came from (``--smtp x:0: port must be a number from 1 to 65535``, ``targets.yaml:4: 'smtp' in
target 2 ...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from maildiag.errors import UsageError
from maildiag.lang import LANGS
from maildiag.terminal import printable

if TYPE_CHECKING:
    from maildiag.config import RunConfig
    from maildiag.models import Security, Service, Target

# This module is on every command's path: it imports no dataclasses, no models and no sockets
# until a value needs them (``maildiag explain`` starts in a few milliseconds).

SERVICES = ("smtp", "imap", "pop3")

FORMATS = ("text", "json", "junit", "nagios", "prometheus", "html")
FAIL_ON = ("warn", "fail")
MAX_TIMEOUT = 3600.0
MAX_DAYS = 3650
NTP_PORT = 123
DNS_PORT = 53


class OptionError(ValueError):
    """A value an option cannot take; ``str()`` is the reason, without the option's name."""


class Scope(StrEnum):
    RUN = "run"  # the whole run: command line only
    TARGET = "target"  # one mailbox: the command line, or a target of a targets file
    SHARED = "shared"  # also a file-wide default (``defaults:`` of a targets file)
    SERVE = "serve"  # the exporter process: its command line, or ``exporter:`` of its file


class Option(NamedTuple):
    name: str  # the key of its value in the parsed values
    flags: tuple[str, ...]  # ("--smtp",); () for a positional argument
    help: str
    metavar: str | None = None  # None: a flag without a value (true when given)
    default: Any = None
    parse: Callable[[Any], Any] | None = None  # raw value -> checked value; OptionError
    config: str | None = None  # its key in a targets file; None: not allowed there
    scope: Scope = Scope.RUN
    repeat: bool = False  # may be given several times; the value is a tuple
    choices: tuple[str, ...] = ()  # the values it takes (help and docs; parse checks them)
    negated_by: str | None = None  # a flag that sets it to False (``--no-clock`` for clock)
    cli: bool = True  # False: a key of the targets file only, not on the command line

    @property
    def positional(self) -> bool:
        return not self.flags and self.cli

    def checked(self, raw: Any) -> Any:
        """The raw value (a string from the command line, a tuple when repeated) parsed."""
        if raw is None or self.parse is None or isinstance(raw, bool):
            return raw
        try:
            if self.repeat:
                return tuple(self.parse(item) for item in raw)
            return self.parse(raw)
        except OptionError as exc:
            shown = raw[-1] if self.repeat else raw
            # a value with a line break or another control character is shown escaped
            raise UsageError(f"{self.label} {printable(str(shown))}: {exc}") from exc

    @property
    def label(self) -> str:
        """How an error names it: ``--timeout``, ``ADDRESS``."""
        if self.negated_by and not self.flags:
            return self.negated_by
        return self.flags[0] if self.flags else (self.metavar or self.name.upper())


class Command(NamedTuple):
    name: str  # "check", "rules lint"
    help: str
    options: tuple[Option, ...]
    examples: tuple[str, ...] = ()
    description: str = ""

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def checked(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Each option's raw value (as typed) parsed; ``UsageError`` names the bad one."""
        return {o.name: o.checked(raw.get(o.name)) for o in self.options}


# -- parsers ----------------------------------------------------------------------------------


def parse_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OptionError(f"must be a non-empty text, not {value!r}")
    return value.strip()


def parse_login(value: Any) -> str:
    """A login name: text a protocol line can carry (no line breaks, no NUL)."""
    text = parse_text(value)
    problem = login_problem(text)
    if problem:
        raise OptionError(f"{problem}: a login is one line of text")
    return text


def login_problem(login: str) -> str | None:
    """Why a login cannot be sent as one protocol line, or None when it can.

    A line break would end the command and start another (``alice\\r\\nDELE 1``); NUL and the
    other control characters have no place in a login either.
    """
    if any(c in login for c in "\r\n"):
        return "contains a line break (CR or LF)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in login):
        return "contains a control character"
    if not _utf8(login):
        return "is not valid UTF-8 text"
    return None


def password_problem(password: str) -> str | None:
    """Why a password cannot be sent, or None when it can (it is never quoted back).

    CR, LF and NUL cannot travel inside a POP3 ``PASS`` or IMAP ``LOGIN`` line, nor in a SASL
    PLAIN response, whose fields NUL separates; a tab, an ESC or a no-break space can.
    """
    if any(c in password for c in "\r\n"):
        return "contains a line break (CR or LF), which no mail protocol can carry in a password"
    if "\0" in password:
        return "contains a NUL character, which no mail protocol can carry in a password"
    if not _utf8(password):
        return "is not valid UTF-8 text (check the variable's encoding)"
    return None


def _utf8(text: str) -> bool:
    """False for text with undecodable bytes (os.environ keeps them as surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_name(value: Any) -> str:
    """A target's name: one line of text, kept as written (the exporter selects by it)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OptionError(f"must be a text, not {value!r}")
    text = str(value).strip()
    if not text:
        raise OptionError("must be a non-empty text")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise OptionError("must be one line of text without control characters")
    if len(text) > 200:
        raise OptionError("must be at most 200 characters")
    return text


def parse_mail_address(value: Any) -> str:
    from maildiag.address import AddressError, parse_address

    text = parse_text(value)
    try:
        parse_address(text)
    except AddressError as exc:
        raise OptionError(str(exc)) from exc
    return text


def parse_check_target(value: Any) -> str:
    """What ``check`` checks: a mailbox ADDRESS (with ``@``), or a server ``HOST[:PORT][/MODE]``
    checked without a mailbox (``server_targets``)."""
    text = parse_text(value)
    host = text.rpartition("/")[0] if "/" in text else text
    if "@" in text or not ("." in host or ":" in host):
        return parse_mail_address(text)  # a server's name has a dot (or it is an IP address)
    server_host(text)
    return text


def server_host(text: str) -> tuple[str, int | None, Security | None]:
    """``HOST[:PORT][/ssl|starttls|plain]`` of a server check -> host, port, mode."""
    from maildiag.address import AddressError, to_ascii_host
    from maildiag.models import Security

    mode: Security | None = None
    if "/" in text:
        text, _, mode_text = text.rpartition("/")
        try:
            mode = Security(mode_text.lower())
        except ValueError as exc:
            raise OptionError(f"mode must be ssl, starttls or plain, not {mode_text!r}") from exc
        if mode is Security.AUTO:
            raise OptionError("mode must be ssl, starttls or plain")
    host, port = split_host_port(text)
    if _is_ip(host):
        return host, port, mode
    try:
        ascii_host = to_ascii_host(host)
    except AddressError as exc:
        raise OptionError(str(exc)) from exc
    labels = ascii_host.split(".")
    if not all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels):
        raise OptionError("expected a mail address (name@domain) or a server name (HOST[:PORT])")
    return host, port, mode


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# The ports a server check without a port looks at, per service (RFC 8314: implicit TLS first;
# 25 is where other servers deliver, what check_smtp -H checks).
SERVER_PORTS: dict[str, tuple[tuple[int, str], ...]] = {
    "smtp": ((465, "ssl"), (587, "starttls"), (25, "starttls")),
    "imap": ((993, "ssl"), (143, "starttls")),
    "pop3": ((995, "ssl"), (110, "starttls")),
}
PORT_SERVICES = {25: "smtp", 465: "smtp", 587: "smtp", 2525: "smtp", 143: "imap", 993: "imap"}
PORT_SERVICES.update({110: "pop3", 995: "pop3"})


def server_targets(text: str, only: frozenset[Service] | None) -> tuple[Target, ...]:
    """The servers of ``check HOST[:PORT][/MODE]``: each standard port of the services asked
    for (all by default), or the one port given (its service from the port, else ``only``)."""
    from maildiag.config import explicit_security
    from maildiag.models import Security, Service, Source, Target

    host, port, mode = server_host(text)
    if port is None:
        wanted = [s for s in SERVICES if only is None or Service(s) in only]
        return tuple(
            Target(Service(s), host, p, Security(m), Source.EXPLICIT)
            for s in wanted
            for p, m in SERVER_PORTS[s]
            if mode is None or Security(m) is mode
        )
    name = PORT_SERVICES.get(port)
    if name is None:
        if only is None or len(only) != 1:
            raise UsageError(
                f"{text}: port {port} is no standard mail port: name its service with "
                "--only smtp, --only imap or --only pop3"
            )
        name = str(next(iter(only)))
    elif only is not None and Service(name) not in only:
        raise UsageError(f"{text}: port {port} is {name}'s, and --only leaves {name} out")
    return (Target(Service(name), host, port, mode or explicit_security(port), Source.EXPLICIT),)


def is_server(address: str | None) -> bool:
    """``check HOST[:PORT]``: a server checked without a mailbox (``parse_check_target``)."""
    return bool(address) and "@" not in str(address)


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise OptionError("port must be a number from 1 to 65535")
    return int(text)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or a bare IPv6 literal -> (host, port).

    The one parser of a host with an optional port; ``port`` is ``default_port`` when none is
    given. OptionError names what is wrong.
    """
    text = text.strip()
    port: int | None = default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise OptionError("expected [IPv6]:PORT")
            port = parse_port(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = parse_port(port_text)
    else:
        host = text  # a name, or a bare IPv6 literal
    host = host.strip()
    if not host or any(c.isspace() for c in host):
        raise OptionError("no host name")
    return host, port


def parse_server(name: str) -> Callable[[Any], Target]:
    """``HOST[:PORT][/ssl|starttls|plain]`` -> the Target of service ``name`` (``--smtp`` ...)."""

    def parse(value: Any) -> Target:
        from maildiag.config import DEFAULT_PORTS, explicit_security
        from maildiag.models import Security, Service, Source, Target

        service = Service(name)
        text = parse_text(value)
        mode: Security | None = None
        if "/" in text:
            text, _, mode_text = text.rpartition("/")
            try:
                mode = Security(mode_text.lower())
            except ValueError as exc:
                raise OptionError(
                    f"mode must be ssl, starttls or plain, not {mode_text!r}"
                ) from exc
            if mode is Security.AUTO:
                raise OptionError("mode must be ssl, starttls or plain")
        host, port = split_host_port(text)
        if port is None:
            port = DEFAULT_PORTS[(service, mode or Security.SSL)]
        return Target(service, host, port, mode or explicit_security(port), Source.EXPLICIT)

    return parse


def parse_seconds(value: Any) -> float:
    """A duration in seconds, above 0 and at most an hour (``--timeout``)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise OptionError(f"must be a number of seconds, not {value!r}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(f"must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_TIMEOUT:
        raise OptionError(f"must be above 0 and at most {MAX_TIMEOUT:g} seconds, not {value:g}")
    return float(value)


def parse_days(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise OptionError(f"must be a whole number of days from 0 to {MAX_DAYS}, not {value!r}")
    return value


def parse_services(value: Any) -> frozenset[Service]:
    """``smtp,imap`` or a list of names (``only:`` in a targets file)."""
    from maildiag.models import Service

    if isinstance(value, str):
        names: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        names = value
    else:
        raise OptionError(f"must be a list of services (smtp, imap, pop3), not {value!r}")
    services = set()
    for name in names:
        try:
            services.add(Service(str(name).strip().lower()))
        except ValueError as exc:
            raise OptionError(f"unknown service {name!r} (use smtp, imap, pop3)") from exc
    if not services:
        raise OptionError("needs at least one of smtp, imap, pop3")
    return frozenset(services)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env_name(value: Any) -> str:
    text = parse_text(value)
    if not _ENV_NAME.match(text):
        raise OptionError(
            f"must be the name of an environment variable (like MAIL_PASSWORD), not {text!r}"
        )
    return text


def parse_resolver(value: Any) -> str:
    """``IP[:PORT]`` of a DNS server; the text as given (``Dns`` splits it again)."""
    import ipaddress

    text = parse_text(value)
    host, _ = split_host_port(text, DNS_PORT)
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise OptionError(f"expected an IP address, optionally with :PORT, not {text!r}") from exc
    return text


def parse_time_server(value: Any) -> str:
    text = parse_text(value)
    split_host_port(text, NTP_PORT)
    return text


def parse_ca_file(value: Any) -> str:
    import ssl

    path = os.path.expanduser(parse_text(value))
    if not os.path.isfile(path):
        raise OptionError("no such file")
    try:
        # a bare context: the system's trust store (~40 ms to load) has nothing to do with it
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise OptionError(f"not a readable PEM bundle of CA certificates ({reason})") from exc
    return path


def parse_directory(value: Any) -> str:
    text = parse_text(value)
    if not os.path.isdir(text):
        raise OptionError("not a directory")
    return text


def parse_listen(value: Any) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[IPv6]:PORT`` to serve on; port 0 takes a free one (it is printed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ``listen: 9467`` in YAML: a port without its address
    text = parse_text(value)
    head, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise OptionError("expected ADDR:PORT, e.g. 127.0.0.1:9467 or [::1]:9467")
    bracketed = head.startswith("[") and head.endswith("]")
    host = head[1:-1] if bracketed else head
    if not host or any(c.isspace() or c in "[]" for c in host):
        raise OptionError("expected an address before the port, e.g. 127.0.0.1:9467")
    if ":" in host and not bracketed:
        raise OptionError("an IPv6 address goes in brackets: [::1]:9467")
    return host, int(port_text)


def parse_count(low: int, high: int) -> Callable[[Any], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise OptionError(f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    return parse


def parse_offset(value: Any) -> float:
    """Seconds taken off a scrape's timeout: 0 or more, below a minute."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise OptionError(f"must be a number of seconds, not {value!r}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 60:
        raise OptionError(f"must be a number of seconds from 0 to below 60, not {value!r}")
    return float(value)


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"must be true or false, not {value!r}")
    return value


def one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise OptionError(f"must be one of {', '.join(choices)}, not {value!r}")
        return text

    return parse


# -- the options ------------------------------------------------------------------------------

LANG = Option(
    "lang",
    ("--lang",),
    "language of titles and steps (default from the locale)",
    metavar="en|ru",
    parse=one_of(LANGS),
    choices=LANGS,
)
RULES = Option(
    "rules",
    ("--rules",),
    "also load the rules in DIR, after the built-ins (also MAILDIAG_RULES)",
    metavar="DIR",
    default=(),
    parse=parse_directory,
    repeat=True,
)
JSON = Option("json", ("--json",), "print JSON")
TIMEOUT = Option(
    "timeout",
    ("--timeout",),
    "limit for each network step: a DNS query, a connect, a TLS handshake, one reply",
    metavar="SECONDS",
    default=10.0,
    parse=parse_seconds,
    config="timeout",
    scope=Scope.SHARED,
)
RESOLVER = Option(
    "resolver",
    ("--resolver",),
    "DNS server to ask instead of the system's",
    metavar="IP[:PORT]",
    parse=parse_resolver,
    config="resolver",
    scope=Scope.SHARED,
)


def _server(service: str) -> Option:
    return Option(
        service,
        (f"--{service}",),
        f"use this {service.upper()} server instead of discovery (mode ssl, starttls or plain)",
        metavar="HOST[:PORT][/MODE]",
        parse=parse_server(service),
        config=service,
        scope=Scope.TARGET,
    )


CHECK = Command(
    "check",
    "diagnose a mailbox's servers end to end",
    (
        Option(
            "address",
            (),
            "the mailbox address, e.g. you@yandex.ru; or a server HOST[:PORT][/MODE] to check "
            "without a mailbox, on its standard mail ports or the one given (not with --config)",
            metavar="ADDRESS",
            parse=parse_check_target,
            config="address",
            scope=Scope.TARGET,
        ),
        *(_server(s) for s in SERVICES),
        Option(
            "only",
            ("--only",),
            "check only these services (default: all, or with servers given only those; "
            "name more to have them found as well)",
            metavar="smtp,imap,pop3",
            parse=parse_services,
            config="only",
            scope=Scope.SHARED,
        ),
        Option(
            "login",
            ("--login",),
            "login name when it differs from ADDRESS",
            metavar="LOGIN",
            parse=parse_login,
            config="login",
            scope=Scope.TARGET,
        ),
        Option(
            "password_env",
            ("--password-env",),
            "read the password from this environment variable",
            metavar="VAR",
            parse=parse_env_name,
            config="password_env",
            scope=Scope.SHARED,
        ),
        Option("ask_password", ("--ask-password",), "prompt for the password without echo"),
        Option(
            "oauth2_token_env",
            ("--oauth2-token-env",),
            "log in with this OAuth2 access token (an environment variable) instead of a "
            "password: SASL XOAUTH2 or OAUTHBEARER",
            metavar="VAR",
            parse=parse_env_name,
            config="oauth2_token_env",
            scope=Scope.SHARED,
        ),
        Option(
            "sender",
            ("--from",),
            "sender address to test ownership of (default: ADDRESS)",
            metavar="ADDRESS",
            parse=parse_mail_address,
            config="from",
            scope=Scope.TARGET,
        ),
        Option(
            "ca_file",
            ("--ca-file",),
            "also trust these CA certificates (PEM)",
            metavar="PEM",
            parse=parse_ca_file,
            config="ca_file",
            scope=Scope.SHARED,
        ),
        RESOLVER,
        Option(
            "time_server",
            ("--time-server",),
            "SNTP server for the clock check (default: a public NTP pool)",
            metavar="HOST[:PORT]",
            parse=parse_time_server,
            config="time_server",
            scope=Scope.SHARED,
        ),
        Option(
            "clock",
            (),
            "check the local clock",
            default=True,
            parse=parse_bool,
            config="clock",
            scope=Scope.SHARED,
            negated_by="--no-clock",
        ),
        Option(
            "alternatives",
            (),
            "try the other servers and ports of a service when its server fails",
            default=True,
            parse=parse_bool,
            config="alternatives",
            scope=Scope.SHARED,
            negated_by="--no-alternatives",
        ),
        TIMEOUT,
        Option(
            "warn_days",
            ("--warn-days",),
            "warn when a certificate expires within N days",
            metavar="N",
            default=21,
            parse=parse_days,
            config="warn_days",
            scope=Scope.SHARED,
        ),
        Option(
            "crit_days",
            ("--crit-days",),
            "fail when a certificate expires within N days",
            metavar="N",
            default=7,
            parse=parse_days,
            config="crit_days",
            scope=Scope.SHARED,
        ),
        Option(
            "format",
            ("--format",),
            "output format",
            metavar="FORMAT",
            default="text",
            parse=one_of(FORMATS),
            choices=FORMATS,
        ),
        Option("json", ("--json",), "short for --format json"),
        Option(
            "config",
            ("--config",),
            "check every target listed in a YAML file (see docs/reference.md)",
            metavar="FILE",
            parse=parse_text,
        ),
        Option(
            "fail_on",
            ("--fail-on",),
            "what counts as failure in the exit code: warn or fail",
            metavar="warn|fail",
            default="fail",
            parse=one_of(FAIL_ON),
            choices=FAIL_ON,
        ),
        RULES,
        LANG,
        Option(
            "transcript", ("--transcript",), "also show each protocol dialogue, secrets redacted"
        ),
        Option(
            "verbose",
            ("--verbose", "-v"),
            "text and html: also the check ids, categories and rule ids, every step of a note "
            "and every piece of evidence",
        ),
        Option(
            "name",
            (),
            "the target's name in reports and for the exporter (default: its address); "
            "unique in the file",
            metavar="NAME",
            parse=parse_name,
            config="name",
            scope=Scope.TARGET,
            cli=False,
        ),
    ),
    examples=(
        "maildiag check you@yandex.ru",
        "MAIL_PASSWORD=... maildiag check you@example.com --password-env MAIL_PASSWORD",
        "maildiag check you@example.com --smtp mail.example.com:587/starttls --only smtp",
        "maildiag check --config targets.yaml --format junit > maildiag.xml",
        "maildiag check mail.example.com --format nagios",
        "maildiag check mail.example.com:587",
    ),
)

EXPLAIN = Command(
    "explain",
    "diagnose an error text or a whole bounce (an argument or stdin), or a mail log or mailbox",
    (
        Option(
            "text",
            (),
            "the error text or a whole bounce message; - (or a pipe) reads stdin",
            metavar="TEXT",
        ),
        Option(
            "file",
            ("--file",),
            "a mail log (each error line), an mbox, a maildir or a message file; - reads stdin",
            metavar="LOG",
        ),
        JSON,
        LANG,
        RULES,
    ),
    examples=(
        'maildiag explain "535 5.7.8 Username and Password not accepted"',
        "maildiag explain < bounce.eml",
        "maildiag explain --file /var/log/mail.log --json",
        "maildiag explain --file ~/Maildir/.Bounces",
    ),
)

SETTINGS = Command(
    "settings",
    "the settings a mail program needs: servers, ports, security, login form",
    (
        Option(
            "address",
            (),
            "the mailbox address",
            metavar="ADDRESS",
            parse=parse_mail_address,
        ),
        JSON,
        LANG,
        RESOLVER,
        TIMEOUT,
        RULES,
    ),
    examples=("maildiag settings you@yandex.ru", "maildiag settings you@example.com --json"),
)

_RULE_DIR = Option(
    "directory", (), "rule directory (default: the built-in rules)", metavar="DIR", parse=parse_text
)
RULES_LINT = Command(
    "rules lint",
    "validate a rule base: schema, regexes, duplicate ids",
    (_RULE_DIR,),
    examples=("maildiag rules lint", "maildiag rules lint ./my-rules"),
)
RULES_TEST = Command(
    "rules test",
    "run every rule's embedded examples and counterexamples",
    (_RULE_DIR,),
    examples=("maildiag rules test", "maildiag rules test ./my-rules"),
)

EXPORTER = Command(
    "exporter",
    "serve checks to Prometheus: /probe?target=NAME checks a target of --config, /metrics "
    "tells about the exporter",
    (
        Option(
            "listen",
            ("--listen",),
            "address and port to serve HTTP on (port 0: a free one)",
            metavar="ADDR:PORT",
            parse=parse_listen,
            config="listen",
            scope=Scope.SERVE,
        ),
        Option(
            "config",
            ("--config",),
            "the targets file: its targets, modules and exporter settings (see docs/reference.md)",
            metavar="FILE",
            parse=parse_text,
        ),
        Option(
            "allow_adhoc",
            ("--allow-adhoc",),
            "also probe servers a scrape names: /probe?target=HOST[:PORT]&module=M",
            parse=parse_bool,
            config="allow_adhoc",
            scope=Scope.SERVE,
        ),
        Option(
            "max_probes",
            ("--max-probes",),
            "probes running at once; a scrape beyond them gets 503",
            metavar="N",
            default=64,
            parse=parse_count(1, 10000),
            config="max_probes",
            scope=Scope.SERVE,
        ),
        Option(
            "per_host",
            ("--per-host",),
            "connections at once to one host and service, over all probes",
            metavar="N",
            default=2,
            parse=parse_count(1, 1000),
            config="per_host",
            scope=Scope.SERVE,
        ),
        Option(
            "probe_timeout",
            ("--probe-timeout",),
            "longest time a probe may take; a scrape's own timeout, less --timeout-offset, when "
            "shorter",
            metavar="SECONDS",
            default=30.0,
            parse=parse_seconds,
            config="probe_timeout",
            scope=Scope.SERVE,
        ),
        Option(
            "timeout_offset",
            ("--timeout-offset",),
            "taken off Prometheus's scrape timeout, to leave time for the answer",
            metavar="SECONDS",
            default=0.5,
            parse=parse_offset,
            config="timeout_offset",
            scope=Scope.SERVE,
        ),
        RULES,
    ),
    examples=(
        "maildiag exporter --listen 127.0.0.1:9467 --config /etc/maildiag/targets.yaml",
        "MAIL_PASSWORD=... maildiag exporter --listen [::1]:9467 --config targets.yaml",
        "maildiag exporter --listen 127.0.0.1:9467 --config servers.yaml --allow-adhoc",
    ),
)

COMMANDS: tuple[Command, ...] = (CHECK, EXPLAIN, SETTINGS, RULES_LINT, RULES_TEST, EXPORTER)
_BY_NAME = {o.name: o for o in CHECK.options}


def command(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)


# -- the run configuration ---------------------------------------------------------------------


def conflict(values: Mapping[str, Any], label: Callable[[Option], str] | None = None) -> str | None:
    """What is wrong with these option values together, or None; ``label`` names an option
    (its flag by default; a targets file names its key)."""
    name = label or (lambda o: o.label)
    only = values.get("only")
    if is_server(values.get("address")):
        for key in (
            *SERVICES,
            "login",
            "sender",
            "password_env",
            "ask_password",
            "oauth2_token_env",
        ):
            if values.get(key):
                return (
                    f"{name(CHECK.option(key))} needs a mailbox, and {values['address']} is a "
                    "server checked without one: to check logins there, name a mailbox ADDRESS "
                    "and this server as its smtp, imap or pop3 server"
                )
    for service in SERVICES:
        if only and values.get(service) is not None and service not in only:
            server, scope = name(CHECK.option(service)), name(CHECK.option("only"))
            return f"{server} names a {service} server but {scope} leaves {service} out"
    token = values.get("oauth2_token_env")
    for source in ("password_env", "ask_password"):
        if token and values.get(source):
            password, oauth2 = name(CHECK.option(source)), name(CHECK.option("oauth2_token_env"))
            return (
                f"{password} and {oauth2} cannot be used together: a login uses either a "
                "password or an OAuth2 token"
            )
    if values.get("time_server") is not None and values.get("clock") is False:
        server, clock = name(CHECK.option("time_server")), name(CHECK.option("clock"))
        return f"{server} names a time server but {clock} turns the clock check off"
    warn, crit = values.get("warn_days"), values.get("crit_days")
    if warn is not None and crit is not None and crit > warn:
        crit_label, warn_label = name(CHECK.option("crit_days")), name(CHECK.option("warn_days"))
        return f"{crit_label} ({crit}) cannot exceed {warn_label} ({warn})"
    return None


def check_config(
    values: Mapping[str, Any], *, password: str | None, oauth2_token: str | None = None
) -> RunConfig:
    """The frozen configuration of one check from its parsed option values.

    The checks that concern several options at once live here, so the command line and a
    targets file get them alike.
    """
    from maildiag.config import RunConfig
    from maildiag.models import Service

    given: dict[str, Any] = {o.name: values.get(o.name) for o in CHECK.options}
    v: dict[str, Any] = {
        name: o.default if given[name] is None else given[name] for name, o in _BY_NAME.items()
    }
    problem = conflict(v)
    if problem:
        raise UsageError(problem)
    if password is not None and oauth2_token is not None:
        raise UsageError("a login uses either a password or an OAuth2 token, not both")
    server = is_server(v["address"])
    if server:
        explicit = server_targets(v["address"], v["only"])
    else:
        explicit = tuple(v[s] for s in SERVICES if v[s] is not None)
    # With servers given and no `only`, those servers are all that is checked: nothing about the
    # address's domain is looked up. Naming more services in `only` has them discovered too.
    only = v["only"] or frozenset(t.service for t in explicit) or frozenset(Service)
    required: frozenset[Service] = frozenset()
    if server:
        only = frozenset(t.service for t in explicit)
        required = only if (v["only"] or len(explicit) == 1) else frozenset()
    return RunConfig(
        address=v["address"],
        explicit=explicit,
        only=only,
        login=v["login"],
        password=password,
        oauth2_token=oauth2_token,
        sender=v["sender"],
        ca_file=v["ca_file"],
        resolver=v["resolver"],
        time_server=v["time_server"],
        check_clock=v["clock"],
        alternatives=v["alternatives"] and not server,
        server=server,
        required=required,
        timeout=v["timeout"],
        warn_days=v["warn_days"],
        crit_days=v["crit_days"],
        lang=v["lang"] or "en",
        transcript=bool(v["transcript"]),
        rules_dirs=tuple(v["rules"]),
    )


def secret_from_env(var: str, environ: Mapping[str, str] | None = None) -> str:
    """The password in ``var``, checked to be something a protocol line can carry."""
    return _from_env("--password-env", var, environ, "password", password_problem)


def token_from_env(var: str, environ: Mapping[str, str] | None = None) -> str:
    """The OAuth2 access token in ``var``, checked like a password and to be a bearer token
    (RFC 6750 b64token); surrounding whitespace (a trailing newline from a file) is dropped."""
    from maildiag.oauth2 import token_problem

    def problem(token: str) -> str | None:
        return password_problem(token) or token_problem(token)

    return _from_env("--oauth2-token-env", var, environ, "token", problem, strip=True)


def _from_env(
    flag: str,
    var: str,
    environ: Mapping[str, str] | None,
    what: str,
    problem_of: Callable[[str], str | None],
    *,
    strip: bool = False,
) -> str:
    env = os.environ if environ is None else environ
    value = env.get(var)
    if value is None:
        raise UsageError(f"{flag} {var}: that environment variable is not set")
    if strip:
        value = value.strip(" \t\r\n")
    if not value:
        raise UsageError(f"{flag} {var}: the variable is empty")
    problem = problem_of(value)
    if problem:
        raise UsageError(f"{flag} {var}: the {what} {problem}")
    return value
