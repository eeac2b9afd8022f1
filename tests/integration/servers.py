"""Real mail servers on 127.0.0.1 for the integration suite: Postfix, Dovecot and dnsmasq.

``MailServers(root).start()`` writes every config and certificate under ``root`` (a fresh temp
dir), starts the three daemons on free high ports, and waits until every port answers;
``stop()`` ends them by the pids they wrote. Nothing here touches /etc or a system instance:
Postfix runs from its own config dir (``postfix -c``) with its own queue and data dirs, Dovecot
from its own ``dovecot.conf`` and base_dir, dnsmasq from its own conf file.

The world the servers describe (all of it on 127.0.0.1)::

    example.test             MX mail.example.test; SRV records for all six RFC 6186/8314 services
    mail.example.test        A 127.0.0.1
    *.test (anything else)   NXDOMAIN (dnsmasq is authoritative for .test: ``local=/test/``)

    users (Dovecot passwd-file; Postfix authenticates through Dovecot's SASL socket)
      alice@example.test     everything allowed; owns the sender alice@example.test
      carol@example.test     POP3 denied (deny-list passdb for service pop3); IMAP and SMTP fine
      sink@example.test      only for the smoke test that proves a real delivery is detectable
    OAuth2 (Dovecot's oauth2 passdb, XOAUTH2 and OAUTHBEARER): access tokens are JWTs signed
      with HS256 by a key of this run, validated by Dovecot itself (introspection_mode = local:
      signature, ``exp``, the ``email`` claim against the login, the ``mail`` scope);
      ``oauth_token(address, expired=..., scope=...)`` mints one. The deny list applies to them.

    Postfix listeners (``ports.<name>``)
      smtp_plain        like 25:  no TLS, no AUTH; mail to example.test accepted from anyone
      submission        like 587: STARTTLS required (smtpd_tls_security_level=encrypt),
                                  AUTH only after STARTTLS, relay only when authenticated,
                                  sender ownership at RCPT (reject_sender_login_mismatch)
      submissions       like 465: implicit TLS, otherwise as submission
      smtp_expired      implicit TLS with an expired certificate (trusted CA, right names)
      smtp_wronghost    implicit TLS with a certificate for other.example.net only
      smtp_selfsigned   implicit TLS with a self-signed certificate for the right names
    Dovecot listeners: imap (STARTTLS), imaps, pop3 (STLS), pop3s — good certificate
    ``refused``: a port nothing listens on.

No mail leaves the machine: recipients in example.test go to Maildirs under ``root``, every other
transport is ``discard``. DATA is logged with a marker line (``DATA_MARKER``) so a test can prove
that maildiag never sent it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
DOMAIN = "example.test"
MAIL_HOST = "mail.example.test"
NXDOMAIN = "no-such-domain.test"

ALICE = "alice@example.test"
CAROL = "carol@example.test"
SINK = "sink@example.test"
NOT_OWNED = "someone-else@example.test"
# Long and distinctive so that any copy of it, or of its base64 forms, is found in output.
PASSWORDS = {
    ALICE: "Alice-Integration-S3cret-7731",
    CAROL: "Carol-Integration-S3cret-4419",
    SINK: "Sink-Integration-S3cret-0052",
}
DATA_MARKER = "maildiag-harness-saw-DATA"
OAUTH_SCOPE = "mail"  # the scope Dovecot's oauth2 passdb wants in a token
GOOD_CERT_DAYS = 90  # the good certificate expires in 90.5 days
# one message sits in alice's and carol's INBOX (in cur/, no flags), so any change is visible
SEEDED_MESSAGE = "1700000000.M1P1.mail.example.test,S=120,W=123:2,"

# MAILDIAG_IT_SBIN points the harness at another sbin dir (the gate test uses a missing one).
SBIN = os.environ.get("MAILDIAG_IT_SBIN", "/usr/sbin")
POSTFIX = f"{SBIN}/postfix"
DOVECOT = f"{SBIN}/dovecot"
DNSMASQ = f"{SBIN}/dnsmasq"
BINARIES = (POSTFIX, DOVECOT, DNSMASQ, "/usr/lib/dovecot/imap-login", "/usr/lib/dovecot/pop3-login")

MAIL_UID = 65534  # nobody: Dovecot refuses mail processes as root
MAIL_GID = 65534

# every mailbox change Dovecot's mail_log plugin can report
MAIL_LOG_EVENTS = (
    "delete",
    "undelete",
    "expunge",
    "save",
    "copy",
    "mailbox_create",
    "mailbox_delete",
    "mailbox_rename",
    "flag_change",
)

SMTP_LISTENERS = (
    "smtp_plain",
    "submission",
    "submissions",
    "smtp_expired",
    "smtp_wronghost",
    "smtp_selfsigned",
)
DOVECOT_LISTENERS = ("imap", "imaps", "pop3", "pop3s")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not os.access(b, os.X_OK)]


class ServerError(RuntimeError):
    """A server did not start or did not answer; the message names which and why."""


def _free_port(udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 right now (TCP, and UDP when asked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((HOST, port))
        except OSError:
            continue
        return port
    raise ServerError("no free port pair on 127.0.0.1")


@dataclass
class Ports:
    smtp_plain: int = 0
    submission: int = 0
    submissions: int = 0
    smtp_expired: int = 0
    smtp_wronghost: int = 0
    smtp_selfsigned: int = 0
    imap: int = 0
    imaps: int = 0
    pop3: int = 0
    pop3s: int = 0
    dns: int = 0
    refused: int = 0

    @classmethod
    def pick(cls) -> Ports:
        taken: set[int] = set()
        ports = cls()
        for name in (*SMTP_LISTENERS, *DOVECOT_LISTENERS, "dns", "refused"):
            while True:
                port = _free_port(udp_too=(name == "dns"))
                if port not in taken:
                    break
            taken.add(port)
            setattr(ports, name, port)
        return ports


@dataclass
class Timings:
    configs_s: float = 0.0
    start_s: float = 0.0
    ready_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.configs_s + self.start_s + self.ready_s


# --------------------------------------------------------------------------------------------
# certificates


@dataclass
class Certs:
    ca_pem: Path
    good: Path  # key + leaf + chain, for mail.example.test and 127.0.0.1
    good_cert: Path
    good_key: Path
    expired: Path
    wronghost: Path
    selfsigned: Path


def make_certs(directory: Path) -> Certs:
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca = trustme.CA(organization_name="maildiag integration CA")
    ca_pem = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))

    def write(name: str, leaf: trustme.LeafCert) -> Path:
        path = directory / f"{name}.pem"
        # key first, then the chain: the layout smtpd_tls_chain_files wants
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    # like a Let's Encrypt certificate: 90 days, so expiry thresholds can be tested against it
    good_leaf = ca.issue_cert(
        MAIL_HOST,
        HOST,
        common_name=MAIL_HOST,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=GOOD_CERT_DAYS, hours=12),
    )
    good = write("good", good_leaf)
    good_cert = directory / "good-chain.pem"
    good_cert.write_bytes(b"".join(b.bytes() for b in good_leaf.cert_chain_pems))
    good_key = directory / "good-key.pem"
    good_leaf.private_key_pem.write_to_path(str(good_key))

    expired = write(
        "expired",
        ca.issue_cert(
            MAIL_HOST,
            HOST,
            common_name=MAIL_HOST,
            not_before=now - dt.timedelta(days=400),
            not_after=now - dt.timedelta(days=30),
        ),
    )
    wronghost = write(
        "wronghost",
        ca.issue_cert("other.example.net", common_name="other.example.net"),
    )

    # self-signed leaf: a server certificate (CA:FALSE) that is its own issuer
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MAIL_HOST)])
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(MAIL_HOST), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    selfsigned = directory / "selfsigned.pem"
    selfsigned.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    for p in directory.iterdir():
        p.chmod(0o644)  # Postfix's smtpd and Dovecot's config parser read them as non-root
    return Certs(ca_pem, good, good_cert, good_key, expired, wronghost, selfsigned)


# --------------------------------------------------------------------------------------------
# config text


def _postfix_main(root: Path, certs: Certs) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/postfix/spool
data_directory = {root}/postfix/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/logs/postfix.log
maillog_file_prefixes = {root}/logs
myhostname = {MAIL_HOST}
mydomain = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
# Postfix's default mynetworks holds 127.0.0.0/8: every local client would be a trusted relay.
mynetworks = 127.0.0.254/32
inet_interfaces = {HOST}
inet_protocols = ipv4
alias_maps =
alias_database =
relayhost =
# nothing ever leaves the machine
default_transport = discard
relay_transport = discard
local_transport = discard
virtual_alias_domains =
virtual_alias_maps =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {root}/vmail
virtual_mailbox_maps = texthash:{root}/postfix/etc/vmailbox
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_GID}
virtual_minimum_uid = 100
smtpd_banner = $myhostname ESMTP $mail_name
smtpd_sasl_type = dovecot
smtpd_sasl_path = {root}/dovecot/auth-client
smtpd_sasl_auth_enable = no
smtpd_sender_login_maps = texthash:{root}/postfix/etc/sender_logins
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_data_restrictions = check_client_access static:{{WARN {DATA_MARKER}}}
smtpd_tls_security_level = none
smtpd_tls_chain_files = {certs.good}
smtpd_tls_loglevel = 1
smtpd_error_sleep_time = 0
smtpd_peername_lookup = no
biff = no
"""


def _postfix_master(ports: Ports, certs: Certs) -> str:
    common_auth = [
        "smtpd_sasl_auth_enable=yes",
        "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        "smtpd_recipient_restrictions=reject_sender_login_mismatch",
    ]
    listeners = {
        "smtp_plain": [],
        "submission": [
            "smtpd_tls_security_level=encrypt",
            "smtpd_tls_auth_only=yes",
            *common_auth,
        ],
        "submissions": ["smtpd_tls_wrappermode=yes", *common_auth],
        "smtp_expired": [
            "smtpd_tls_wrappermode=yes",
            f"smtpd_tls_chain_files={certs.expired}",
            *common_auth,
        ],
        "smtp_wronghost": [
            "smtpd_tls_wrappermode=yes",
            f"smtpd_tls_chain_files={certs.wronghost}",
            *common_auth,
        ],
        "smtp_selfsigned": [
            "smtpd_tls_wrappermode=yes",
            f"smtpd_tls_chain_files={certs.selfsigned}",
            *common_auth,
        ],
    }
    lines = ["# service type  private unpriv  chroot  wakeup  maxproc command + args"]
    for name, opts in listeners.items():
        lines.append(f"{HOST}:{getattr(ports, name)} inet n - n - - smtpd")
        lines.append(f"  -o syslog_name=postfix/{name}")
        lines.extend(f"  -o {o}" for o in opts)
    lines.append(
        """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd"""
    )
    return "\n".join(lines) + "\n"


def _dovecot_conf(root: Path, ports: Ports, certs: Certs) -> str:
    d = root / "dovecot"
    return f"""\
protocols = imap pop3
listen = {HOST}
base_dir = {d}/run
state_dir = {d}/state
instance_name = maildiag-it-{os.getpid()}
log_path = {root}/logs/dovecot.log
info_log_path = {root}/logs/dovecot.log
auth_verbose = yes
auth_failure_delay = 0
auth_mechanisms = plain login xoauth2 oauthbearer
ssl = yes
ssl_cert = <{certs.good_cert}
ssl_key = <{certs.good_key}
mail_location = maildir:~/Maildir
first_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}
default_internal_user = dovecot
default_login_user = dovenull
pop3_uidl_format = %08Xu%08Xv

# A per-protocol deny list first (deny.imap, deny.pop3, deny.smtp): carol is in deny.pop3.
passdb {{
  driver = passwd-file
  args = {d}/deny.%s
  deny = yes
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
# OAuth2 access tokens: JWTs checked locally against the run's key (keys/default/HS256/default)
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}

# Evidence that maildiag never changes a mailbox: every change event is logged, and every
# command after login is recorded in ~/dovecot.rawlog/ (IMAP and POP3 alike).
mail_plugins = $mail_plugins notify mail_log
plugin {{
  mail_log_events = {" ".join(MAIL_LOG_EVENTS)}
  mail_log_fields = uid box msgid size flags
}}
service postlogin {{
  executable = script-login -d rawlog
  unix_listener postlogin {{
  }}
}}
service imap {{
  executable = imap postlogin
}}
service pop3 {{
  executable = pop3 postlogin
}}

service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {ports.imap}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {ports.pop3}
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {ports.pop3s}
    ssl = yes
  }}
}}
service auth {{
  unix_listener {d}/auth-client {{
    mode = 0666
  }}
}}
# failed logins answer at once: no anvil penalty
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _dnsmasq_conf(root: Path, ports: Ports) -> str:
    srv = {
        "_submissions._tcp": ports.submissions,
        "_submission._tcp": ports.submission,
        "_imaps._tcp": ports.imaps,
        "_imap._tcp": ports.imap,
        "_pop3s._tcp": ports.pop3s,
        "_pop3._tcp": ports.pop3,
    }
    lines = [
        f"port={ports.dns}",
        f"listen-address={HOST}",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "user=root",
        f"pid-file={root}/dnsmasq/dnsmasq.pid",
        "log-queries",
        f"log-facility={root}/logs/dnsmasq.log",
        # authoritative for .test: names not listed here are NXDOMAIN, never forwarded
        "local=/test/",
        f"host-record={MAIL_HOST},{HOST}",
        f"mx-host={DOMAIN},{MAIL_HOST},10",
    ]
    lines += [f"srv-host={name}.{DOMAIN},{MAIL_HOST},{port},0,1" for name, port in srv.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# the servers


@dataclass
class MailServers:
    root: Path
    ports: Ports = field(default_factory=Ports.pick)
    certs: Certs | None = None
    timings: Timings = field(default_factory=Timings)
    # name -> (pid, start time): what stop() may end, recorded when each daemon came up, so a
    # pid reused by some other process after the daemon exited is never signalled
    started: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # the HMAC key Dovecot validates OAuth2 access tokens with (oauth_token mints them)
    oauth_key: bytes = field(default_factory=lambda: os.urandom(32))

    def oauth_token(self, address: str, *, expired: bool = False, scope: str = "") -> str:
        """An OAuth2 access token for ``address`` that Dovecot validates: a JWT (HS256) with the
        ``sub``, ``email``, ``scope`` (default: the one Dovecot wants) and ``exp`` claims."""
        import hashlib
        import hmac
        import json

        def part(obj: dict[str, Any]) -> str:
            raw = json.dumps(obj, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        now = int(time.time())
        claims = {
            "sub": address,
            "email": address,
            "scope": scope or OAUTH_SCOPE,
            "iat": now - 60,
            "exp": now - 30 if expired else now + 3600,
        }
        signed = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
        mac = hmac.new(self.oauth_key, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    # paths ---------------------------------------------------------------------------------
    @property
    def logs(self) -> dict[str, Path]:
        return {n: self.root / "logs" / f"{n}.log" for n in ("postfix", "dovecot", "dnsmasq")}

    @property
    def postfix_dir(self) -> Path:
        return self.root / "postfix" / "etc"

    @property
    def dovecot_conf(self) -> Path:
        return self.root / "dovecot" / "dovecot.conf"

    @property
    def ca_pem(self) -> Path:
        assert self.certs is not None
        return self.certs.ca_pem

    @property
    def resolver(self) -> str:
        return f"{HOST}:{self.ports.dns}"

    def maildir(self, address: str) -> Path:
        return self.root / "vmail" / address.split("@")[0] / "Maildir"

    # setup ---------------------------------------------------------------------------------
    def write_configs(self) -> None:
        t0 = time.monotonic()
        root = self.root
        root.chmod(0o755)  # Postfix and Dovecot children run as their own users
        for sub in (
            "logs",
            "postfix/etc",
            "postfix/spool",
            "postfix/data",
            "dovecot/run",
            "dovecot/state",
            "dnsmasq",
            "vmail",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub).chmod(0o755)
        for log in self.logs.values():
            log.touch()
        self.certs = certs = make_certs(root / "certs")

        # Postfix
        (self.postfix_dir / "main.cf").write_text(_postfix_main(root, certs))
        (self.postfix_dir / "master.cf").write_text(_postfix_master(self.ports, certs))
        users = (ALICE, CAROL, SINK)
        (self.postfix_dir / "vmailbox").write_text(
            "".join(f"{u} {u.split('@')[0]}/Maildir/\n" for u in users)
        )
        (self.postfix_dir / "sender_logins").write_text("".join(f"{u} {u}\n" for u in users))
        os.chown(root / "postfix" / "data", _uid("postfix"), _gid("postfix"))
        vmail = root / "vmail"
        os.chown(vmail, MAIL_UID, MAIL_GID)
        for u in users:
            home = vmail / u.split("@")[0]
            for sub in ("Maildir/cur", "Maildir/new", "Maildir/tmp", "dovecot.rawlog"):
                (home / sub).mkdir(parents=True, exist_ok=True)
            (home / "Maildir" / "cur" / SEEDED_MESSAGE).write_bytes(
                b"From: harness@example.test\r\nTo: "
                + u.encode()
                + b"\r\nSubject: seeded\r\nMessage-ID: <seed@example.test>\r\n\r\nseeded\r\n"
            )
            for dirpath, _dirs, files in os.walk(home):
                os.chown(dirpath, MAIL_UID, MAIL_GID)
                for f in files:
                    os.chown(os.path.join(dirpath, f), MAIL_UID, MAIL_GID)

        # Dovecot
        d = root / "dovecot"
        self.dovecot_conf.write_text(_dovecot_conf(root, self.ports, certs))
        (d / "passwd").write_text(
            "".join(
                f"{u}:{{PLAIN}}{PASSWORDS[u]}:{MAIL_UID}:{MAIL_GID}::{vmail / u.split('@')[0]}::"
                "nodelay=yes\n"
                for u in users
            )
        )
        (d / "oauth2.conf.ext").write_text(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={d}/keys/\n"
            "username_attribute = email\n"
            f"scope = {OAUTH_SCOPE}\n"
        )
        key_file = d / "keys" / "default" / "HS256" / "default"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(base64.b64encode(self.oauth_key).decode())
        for path in (d / "keys", d / "keys" / "default", key_file.parent):
            path.chmod(0o755)
        key_file.chmod(0o644)
        (d / "deny.imap").write_text("")
        (d / "deny.smtp").write_text("")
        (d / "deny.pop3").write_text(f"{CAROL}:::::::nodelay=yes\n")
        for f in (
            "passwd",
            "deny.imap",
            "deny.smtp",
            "deny.pop3",
            "dovecot.conf",
            "oauth2.conf.ext",
        ):
            (d / f).chmod(0o644)

        # dnsmasq
        (root / "dnsmasq" / "dnsmasq.conf").write_text(_dnsmasq_conf(root, self.ports))

        # Postfix re-reads a config file until its mtime is a couple of seconds old (a guard
        # against reading a file mid-edit): date ours back so that costs nothing.
        past = time.time() - 60
        for path in self.postfix_dir.iterdir():
            os.utime(path, (past, past))
        self.timings.configs_s = time.monotonic() - t0

    def _run(self, what: str, argv: list[str]) -> None:
        # Output to a file, not a pipe: a daemon's forked child may keep the pipe open for good.
        out = self.root / "logs" / f"{what}.start.out"
        with out.open("wb") as f:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=30
            )
        if proc.returncode != 0:
            said = out.read_text(errors="replace").strip()[-2000:]
            raise ServerError(
                f"{what} did not start (exit {proc.returncode}): {said}\n{self.log_tails()}"
            )

    def start(self) -> MailServers:
        self.write_configs()
        t0 = time.monotonic()
        try:
            self._run("dnsmasq", [DNSMASQ, f"--conf-file={self.root}/dnsmasq/dnsmasq.conf"])
            self._record("dnsmasq")
            self._run("dovecot", [DOVECOT, "-c", str(self.dovecot_conf)])
            self._record("dovecot")
            self._run("postfix", [POSTFIX, "-c", str(self.postfix_dir), "start"])
            self._record("postfix")
            self.timings.start_s = time.monotonic() - t0
            t1 = time.monotonic()
            self.wait_ready()
            self.timings.ready_s = time.monotonic() - t1
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        pending = {n: getattr(self.ports, n) for n in (*SMTP_LISTENERS, *DOVECOT_LISTENERS)}
        dns_ok = False
        while time.monotonic() < deadline and (pending or not dns_ok):
            for name, port in list(pending.items()):
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        pending.pop(name)
                except OSError:
                    pass
            if not dns_ok:
                dns_ok = self._dns_answers()
            if pending or not dns_ok:
                time.sleep(0.05)
        if pending or not dns_ok:
            down = sorted(pending) + ([] if dns_ok else ["dns"])
            raise ServerError(f"not answering after {timeout:.0f}s: {down}\n{self.log_tails()}")

    def _dns_answers(self) -> bool:
        import dns.exception
        import dns.message
        import dns.query

        q = dns.message.make_query(MAIL_HOST, "A")
        try:
            r = dns.query.udp(q, HOST, port=self.ports.dns, timeout=0.5)
        except (dns.exception.DNSException, OSError):
            return False
        return bool(r.answer)

    # teardown ------------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        files = {
            "postfix": self.root / "postfix" / "spool" / "pid" / "master.pid",
            "dovecot": self.root / "dovecot" / "run" / "master.pid",
            "dnsmasq": self.root / "dnsmasq" / "dnsmasq.pid",
        }
        out = {}
        for name, path in files.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[name] = int(path.read_text().split()[0])
        return out

    def _record(self, name: str) -> None:
        deadline = time.monotonic() + 5
        while (pid := self.pids().get(name)) is None and time.monotonic() < deadline:
            time.sleep(0.02)  # a daemon may write its pid file just after its parent returns
        if pid is None:
            raise ServerError(f"{name} started but wrote no pid file\n{self.log_tails()}")
        self.started[name] = (pid, _start_time(pid))

    def _ours(self) -> dict[int, str | None]:
        """The daemons to stop: those recorded at start, plus any whose pid file names a live
        process that runs from our temp dir (a start that failed half way)."""
        out = {pid: started for pid, started in self.started.values()}
        for pid in self.pids().values():
            if pid not in out and _mentions(pid, str(self.root)):
                out[pid] = _start_time(pid)
        return {pid: st for pid, st in out.items() if _same_process(pid, st)}

    def stop(self) -> None:
        """End the daemons we started by their pids, then wait for (or end) their children."""
        masters = self._ours()
        family = {pid: _start_time(pid) for pid in _descendants(set(masters))}
        for pid, started in masters.items():
            if _same_process(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid, started in family.items():
            while _same_process(pid, started) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _same_process(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.started.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # evidence ------------------------------------------------------------------------------
    def log_mark(self) -> dict[str, int]:
        return {n: p.stat().st_size if p.exists() else 0 for n, p in self.logs.items()}

    def logs_since(self, mark: dict[str, int] | None = None) -> dict[str, str]:
        out = {}
        for name, path in self.logs.items():
            try:
                with path.open("rb") as f:
                    f.seek((mark or {}).get(name, 0))
                    out[name] = f.read().decode("utf-8", "replace")
            except OSError as exc:
                out[name] = f"<unreadable: {exc}>"
        return out

    def log_tails(self, mark: dict[str, int] | None = None, lines: int = 60) -> str:
        parts = []
        for name, text in self.logs_since(mark).items():
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {name} log ---\n{tail}")
        return "\n".join(parts)

    def mailbox_counts(self) -> dict[str, int]:
        """Messages in every Maildir (new + cur)."""
        out = {}
        for u in (ALICE, CAROL, SINK):
            md = self.maildir(u)
            out[u] = sum(len(os.listdir(md / sub)) for sub in ("new", "cur") if (md / sub).is_dir())
        return out

    def mailbox_snapshot(self) -> dict[str, list[str]]:
        """Every message file and folder of alice's and carol's Maildirs (flags are in names)."""
        out = {}
        for u in (ALICE, CAROL):
            md = self.maildir(u)
            entries = []
            for dirpath, dirs, files in os.walk(md):
                rel = os.path.relpath(dirpath, md)
                if os.path.basename(dirpath) in ("new", "cur"):
                    entries += [os.path.join(rel, f) for f in files]
                entries += [os.path.join(rel, d) + "/" for d in dirs]
            out[u] = sorted(entries)
        return out

    def rawlogs(self) -> dict[str, str]:
        """What clients sent after logging in to Dovecot: file name -> text (``*.in`` only)."""
        out = {}
        for u in (ALICE, CAROL):
            d = self.root / "vmail" / u.split("@")[0] / "dovecot.rawlog"
            for f in sorted(d.glob("*.in")):
                out[f"{u}/{f.name}"] = f.read_text(errors="replace")
        return out

    def queued_files(self) -> list[str]:
        """Files in Postfix's queues: a message maildiag made Postfix take would sit here."""
        spool = self.root / "postfix" / "spool"
        found = []
        for q in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
            for dirpath, _dirs, files in os.walk(spool / q):
                found += [os.path.join(dirpath, f) for f in files]
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same_process(pid: int, started: str | None) -> bool:
    return started is not None and _start_time(pid) == started and _alive(pid)


def _mentions(pid: int, text: str) -> bool:
    """Whether the process's command line or environment contains ``text``."""
    for part in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as f:
                if text.encode() in f.read():
                    return True
        except OSError:
            continue
    return False


def _descendants(roots: set[int]) -> set[int]:
    """The given pids and every process below them (from /proc), roots included."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = {r for r in roots if r in parent}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _gid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def secret_forms(password: str, login: str) -> list[str]:
    """Every way a password could leak: itself, and base64 of it at each 3-byte alignment.

    Base64 of any string that contains the password (``\\0login\\0password`` for AUTH PLAIN, the
    bare password for AUTH LOGIN) contains one of the three cores returned here.
    """
    pw = password.encode()
    forms = {password}
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + pw).decode()
        # keep only the characters made of password bits alone: the same in any longer string
        # whose password starts at this offset modulo 3
        start = (pad * 8 + 5) // 6
        end = ((pad + len(pw)) * 8) // 6
        forms.add(enc[start:end])
    forms.add(base64.b64encode(f"\0{login}\0{password}".encode()).decode())
    forms.add(base64.b64encode(pw).decode())
    return sorted(forms)


def new_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="maildiag-it-"))
