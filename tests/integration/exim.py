"""Exim 4 as a submission server on 127.0.0.1, run from the unpacked prefix (see prefix.py).

One daemon, its own config (``exim4 -C``), spool and log files under a fresh root. It speaks like
a typical Exim submission setup, each listener on its own free port (``ports[name]``)::

    submission     like 587: STARTTLS; AUTH PLAIN/LOGIN advertised only inside TLS (Exim answers
                   an AUTH before it "503 AUTH command used when not advertised")
    submissions    like 465: implicit TLS (tls_on_connect_ports)
    expired        implicit TLS with an expired certificate (trusted CA, right names)
    wronghost      implicit TLS with a certificate for other.example.net only
    selfsigned     implicit TLS with a self-signed certificate for the right names

    logins (plaintext authenticators checking a passwd file; a deny file blocks a user's SMTP,
    and Exim then answers exactly as for a wrong password: "535 Incorrect authentication data")
      alice, carol   may submit;  dave  is denied SMTP

    MAIL ACL (Exim checks the sender at MAIL, unlike Postfix at RCPT):
      not authenticated            530 5.7.0 Authentication required
      sender is not the login      553 5.7.1 Sender address <...> is not owned by <login>

Nothing can leave: ``queue_only`` keeps any message that got in in the spool (where
``queued_files`` finds it), there are no routers, and the predata ACL logs ``DATA_MARKER`` the
moment a client sends DATA; CHUNKING (BDAT) is not offered. Evidence is Exim's own mainlog and
rejectlog (``logs/exim-mainlog``), with the connection, TLS and protocol-error selectors on and a
log line for every RCPT accepted (with the authenticated id).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .prefix import (
    DAVE,
    EXIM,
    EXIM_USER,
    FAMILY_PASSWORDS,
    Family,
    free_ports,
    prefix_env,
    wait_ports,
)
from .servers import (
    ALICE,
    CAROL,
    DATA_MARKER,
    HOST,
    MAIL_HOST,
    Certs,
    ServerError,
    _gid,
    _uid,
)

RCPT_MARKER = "maildiag-harness-rcpt-accepted"
# the words with which Exim logs the end of a session (the line names the client's port)
_ENDED = re.compile(
    r"closed by (?:QUIT|EOF)|\blost\b|TLS error on connection|unexpected disconnection|"
    r"timeout|dropped|no MAIL in SMTP connection"
)
_PORT = re.compile(r"\[127\.0\.0\.1\]:(\d+)")
LISTENERS = ("submission", "submissions", "expired", "wronghost", "selfsigned")
IMPLICIT_TLS = ("submissions", "expired", "wronghost", "selfsigned")


def _cert_for(ports: dict[str, int], certs: Certs) -> str:
    """tls_certificate: the file for the port the client connected to (key and chain in one)."""
    expr = str(certs.good)
    for name, path in (
        ("expired", certs.expired),
        ("wronghost", certs.wronghost),
        ("selfsigned", certs.selfsigned),
    ):
        expr = f"${{if eq{{$received_port}}{{{ports[name]}}}{{{path}}}{{{expr}}}}}"
    return expr


def exim_conf(root: Path, ports: dict[str, int], certs: Certs) -> str:
    passwd, deny = root / "passwd", root / "deny"

    # $auth2/$auth3 (PLAIN) and $auth1/$auth2 (LOGIN): login and password
    def condition(user: str, password: str) -> str:
        template = (
            "${if and{ {!eq{PW}{}} {eq{PW}{${lookup{USER}lsearch{PASSWD}}}}"
            " {!eq{${lookup{USER}lsearch{DENY}{yes}{no}}}{yes}} }{yes}{no}}"
        )
        for key, value in (("PASSWD", passwd), ("DENY", deny), ("USER", user), ("PW", password)):
            template = template.replace(key, str(value))
        return template

    smtp_ports = " : ".join(str(ports[n]) for n in LISTENERS)
    on_connect = " : ".join(str(ports[n]) for n in IMPLICIT_TLS)
    return f"""\
primary_hostname = {MAIL_HOST}
qualify_domain = example.test
domainlist local_domains = example.test
spool_directory = {root}/spool
log_file_path = {root}/logs/exim-%slog
pid_file_path = {root}/exim.pid
log_selector = +smtp_connection +incoming_port +smtp_no_mail +smtp_protocol_error \\
  +smtp_syntax_error +tls_cipher +received_recipients
# the daemon re-executes itself (to remove its pid file on SIGTERM): from the prefix, with the
# library path that makes it run there
exim_path = {EXIM}
keep_environment = LD_LIBRARY_PATH
local_interfaces = {HOST}
daemon_smtp_ports = {smtp_ports}
tls_on_connect_ports = {on_connect}
tls_advertise_hosts = *
tls_certificate = {_cert_for(ports, certs)}
host_lookup =
chunking_advertise_hosts =
queue_only = true
smtp_accept_max = 50
# AUTH only inside TLS: the usual Exim submission setup
auth_advertise_hosts = ${{if def:tls_in_cipher {{*}}{{}}}}
acl_smtp_mail = acl_mail
acl_smtp_rcpt = acl_rcpt
acl_smtp_predata = acl_predata

begin acl

acl_mail:
  deny    !authenticated = *
          message = 530 5.7.0 Authentication required
  deny    condition = ${{if eqi{{$sender_address}}{{$authenticated_id}}{{no}}{{yes}}}}
          message = 553 5.7.1 Sender address <$sender_address> is not owned by $authenticated_id
  accept

acl_rcpt:
  deny    !authenticated = *
          message = 530 5.7.0 Authentication required
  warn    logwrite = {RCPT_MARKER}: <$local_part@$domain> for $authenticated_id tls=$tls_in_cipher
  accept

acl_predata:
  warn    logwrite = {DATA_MARKER}
  accept

begin routers

begin transports

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = {condition("$auth2", "$auth3")}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = {condition("$auth1", "$auth2")}
  server_set_id = $auth1
"""


@dataclass
class EximServer(Family):
    name: str = "exim"
    certs: Certs | None = None
    ports: dict[str, int] = field(default_factory=lambda: free_ports(LISTENERS))
    users: tuple[str, ...] = (ALICE, CAROL, DAVE)
    denied: tuple[str, ...] = (DAVE,)

    @property
    def logs(self) -> dict[str, Path]:
        logs = self.root / "logs"
        return {"exim": logs / "exim-mainlog", "exim-panic": logs / "exim-paniclog"}

    @property
    def rejectlog(self) -> Path:
        return self.root / "logs" / "exim-rejectlog"

    def write_configs(self) -> None:
        assert self.certs is not None
        root = self.root
        root.chmod(0o755)
        for sub in ("logs", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "passwd").write_text("".join(f"{u}: {FAMILY_PASSWORDS[u]}\n" for u in self.users))
        (root / "deny").write_text("".join(f"{u}: denied\n" for u in self.denied))
        (root / "exim.conf").write_text(exim_conf(root, self.ports, self.certs))
        uid, gid = _uid(EXIM_USER), _gid(EXIM_USER)
        for sub in ("logs", "spool"):
            os.chown(root / sub, uid, gid)
        for f in ("passwd", "deny"):
            os.chown(root / f, 0, gid)
            (root / f).chmod(0o640)
        for log in self.logs.values():
            log.touch()
            os.chown(log, uid, gid)

    def start(self) -> EximServer:
        self.write_configs()
        out = self.root / "logs" / "exim.start.out"
        try:
            with out.open("wb") as f:
                proc = subprocess.run(
                    [str(EXIM), "-C", str(self.root / "exim.conf"), "-bd"],
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=prefix_env(),
                    timeout=30,
                )
            if proc.returncode != 0:
                said = out.read_text(errors="replace").strip()[-2000:]
                raise ServerError(f"exim did not start (exit {proc.returncode}): {said}")
            self.record("exim", self.root / "exim.pid")
            wait_ports(self.ports, "exim", self.log_tails())
        except BaseException:
            self.stop()
            raise
        return self

    def settle(
        self, mark: dict[str, int], quiet: float = 0.25, limit: float = 3.0
    ) -> dict[str, str]:
        """Exim logs a session's end as its child exits: wait until every connection begun
        since ``mark`` has been logged as ended (each is named by its client port)."""
        deadline = time.monotonic() + limit
        while True:
            text = self.logs_since(mark)["exim"]
            begun = set(re.findall(r"SMTP connection from \[[\d.]+\]:(\d+) \(TCP/IP", text))
            ended = {p for ln in text.splitlines() if _ENDED.search(ln) for p in _PORT.findall(ln)}
            if begun <= ended or time.monotonic() > deadline:
                return self.logs_since(mark)
            time.sleep(0.05)

    def queued_files(self) -> list[str]:
        found = []
        for sub in ("input", "msglog"):
            for dirpath, _dirs, files in os.walk(self.root / "spool" / sub):
                found += [os.path.join(dirpath, f) for f in files]
        return found

    def remove_queued(self) -> None:
        """Remove every message in the spool (the harness's own, after proving it is seen)."""
        ids = sorted({f.name[:-2] for f in (self.root / "spool" / "input").glob("*-H")})
        if ids:
            subprocess.run(
                [str(EXIM), "-C", str(self.root / "exim.conf"), "-Mrm", *ids],
                capture_output=True,
                env=prefix_env(),
                timeout=30,
                check=True,
            )
