"""Cyrus IMAP and POP3 on 127.0.0.1, run from the unpacked prefix (see prefix.py).

One ``master`` with its own imapd.conf and cyrus.conf under a fresh root; each listener is a
Cyrus service of its own name (service-prefixed options give each its certificate)::

    imap, pop3          STARTTLS / STLS; no plaintext login before TLS (Cyrus's default,
                        allowplaintext off): IMAP lists LOGINDISABLED and answers
                        "NO Login only available under a layer", POP3 answers USER with
                        "-ERR [AUTH] USER command only available under a layer"
    imaps, pop3s        implicit TLS
    imapsexpired, imapswronghost, imapsselfsigned    implicit TLS with the bad certificates

    users (SASL auxprop sasldb; virtual domains, the login is the full address)
      alice   everything allowed
      carol   POP3 denied in user_deny.db: "-ERR [SYS/TEMP] Access to this service has been
              blocked" (sent after USER, before the password is checked)
      dave    IMAP denied in user_deny.db: "NO Login failed: authorization failure"

Each INBOX is created (and alice's and carol's seeded with one message) by the harness before any
test, as an admin, so a login never creates anything.

Evidence: Cyrus logs only through syslog(3), to /dev/log. The master runs in a mount namespace
of its own whose /dev (a small tmpfs with the usual device nodes bound in) has ``log`` pointing
at a socket of ours, so its syslog lands in ``logs/cyrus.log`` and nowhere else; nothing outside
the namespace changes. ``auditlog`` logs every change to a message or a mailbox, and telemetry
(``lib/log/<user>/``) records every command a client sends after logging in.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .prefix import (
    CYRUS_MASTER,
    DAVE,
    FAMILY_PASSWORDS,
    PREFIX,
    Family,
    free_ports,
    prefix_env,
    wait_ports,
)
from .servers import ALICE, CAROL, HOST, MAIL_HOST, Certs, ServerError

CYRUS_BIN = PREFIX / "usr/lib/cyrus/bin"
SASLPASSWD = PREFIX / "usr/sbin/saslpasswd2"
LISTENERS = (
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "imapsexpired",
    "imapswronghost",
    "imapsselfsigned",
)
ADMIN = "cyrusadmin"
ADMIN_PASSWORD = "Cyrus-Admin-Harness-8841"
CYRUS_USER, CYRUS_GROUP = "nobody", "nogroup"
DENIED = {CAROL: "pop3*", DAVE: "imap*"}
SEEDED = (ALICE, CAROL)
SEED_MESSAGE = (
    b"From: harness@example.test\r\nTo: {to}\r\nSubject: seeded\r\n"
    b"Message-ID: <seed@example.test>\r\n\r\nseeded\r\n"
)


def imapd_conf(root: Path, certs: Certs) -> str:
    bad = {"imapsexpired": certs.expired, "imapswronghost": certs.wronghost}
    bad["imapsselfsigned"] = certs.selfsigned
    per_service = "".join(
        f"{name}_tls_server_cert: {path}\n{name}_tls_server_key: {path}\n"
        for name, path in bad.items()
    )
    return f"""\
configdirectory: {root}/lib
partition-default: {root}/spool
defaultpartition: default
servername: {MAIL_HOST}
cyrus_user: {CYRUS_USER}
cyrus_group: {CYRUS_GROUP}
syslog_prefix: maildiag-it
virtdomains: userid
unixhierarchysep: yes
admins: {ADMIN}
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {root}/sasldb2
sasl_mech_list: PLAIN LOGIN
failedloginpause: 0
userdeny_db: flat
userdeny_db_path: {root}/lib/user_deny.db
tls_server_cert: {certs.good_cert}
tls_server_key: {certs.good_key}
{per_service}auditlog: yes
telemetry_bysessionid: yes
popminpoll: 0
idlesocket: {root}/lib/socket/idle
notifysocket: {root}/lib/socket/notify
lmtpsocket: {root}/lib/socket/lmtp
statuscache: no
"""


def cyrus_conf(root: Path, ports: dict[str, int]) -> str:
    conf = f"-C {root}/imapd.conf"
    cmds = {
        "imap": "imapd",
        "imaps": "imapd -s",
        "pop3": "pop3d",
        "pop3s": "pop3d -s",
        "imapsexpired": "imapd -s",
        "imapswronghost": "imapd -s",
        "imapsselfsigned": "imapd -s",
    }
    services = "".join(
        f'  {name} cmd="{CYRUS_BIN}/{cmd.split()[0]} {conf} {" ".join(cmd.split()[1:])}" '
        f'listen="{HOST}:{ports[name]}" prefork=0\n'
        for name, cmd in cmds.items()
    )
    return f"""\
START {{
  recover cmd="{CYRUS_BIN}/ctl_cyrusdb {conf} -r"
}}
SERVICES {{
{services}}}
EVENTS {{
}}
DAEMON {{
}}
"""


class SyslogSink:
    """A datagram socket standing in for /dev/log: every message appended to ``path``."""

    def __init__(self, sock_path: Path, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        sock_path.chmod(0o666)  # Cyrus's services log as their own user
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.path.open("ab", buffering=0) as out:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                out.write(data.rstrip(b"\0\n") + b"\n")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=2)


# The master's own /dev: device nodes bound in from the real /dev, and log -> our socket.
_NAMESPACE_SCRIPT = """\
set -e
mkdir -p "$R/hostdev"
mount --bind /dev "$R/hostdev"
mount -t tmpfs -o mode=0755,size=64k maildiag-it-dev /dev
for n in null zero full random urandom; do
    touch "/dev/$n"
    mount --bind "$R/hostdev/$n" "/dev/$n"
done
umount -l "$R/hostdev"
ln -s "$R/syslog.sock" /dev/log
exec "$@"
"""


@dataclass
class CyrusServer(Family):
    name: str = "cyrus"
    certs: Certs | None = None
    ports: dict[str, int] = field(default_factory=lambda: free_ports(LISTENERS))
    users: tuple[str, ...] = (ALICE, CAROL, DAVE)
    sink: SyslogSink | None = None

    @property
    def logs(self) -> dict[str, Path]:
        return {"cyrus": self.root / "logs" / "cyrus.log"}

    def write_configs(self) -> None:
        assert self.certs is not None
        root = self.root
        root.chmod(0o755)
        for sub in ("logs", "lib", "lib/db", "lib/log", "lib/socket", "lib/proc", "spool"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for u in self.users:
            (root / "lib" / "log" / u).mkdir()  # telemetry for this user
        (root / "imapd.conf").write_text(imapd_conf(root, self.certs))
        (root / "cyrus.conf").write_text(cyrus_conf(root, self.ports))
        # user_deny.db, flat format: user TAB version TAB services (wildmat); default message
        (root / "lib" / "user_deny.db").write_text(
            "".join(f"{u}\t2\t{services}\n" for u, services in sorted(DENIED.items()))
        )
        env = prefix_env()
        for user, password in (
            *((u, FAMILY_PASSWORDS[u]) for u in self.users),
            (ADMIN, ADMIN_PASSWORD),
        ):
            local, _, domain = user.partition("@")
            argv = [str(SASLPASSWD), "-f", str(root / "sasldb2"), "-p", "-c"]
            argv += ["-u", domain or MAIL_HOST, local]
            proc = subprocess.run(
                argv, input=password, text=True, capture_output=True, env=env, timeout=30
            )
            if proc.returncode != 0:
                raise ServerError(f"saslpasswd2 for {user} failed: {proc.stderr.strip()}")
        uid, gid = pwd.getpwnam(CYRUS_USER).pw_uid, pwd.getpwnam(CYRUS_USER).pw_gid
        for dirpath, _dirs, files in os.walk(root):
            if dirpath == str(root / "logs"):
                continue
            os.chown(dirpath, uid, gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), uid, gid)
        self.logs["cyrus"].touch()

    def start(self) -> CyrusServer:
        self.write_configs()
        self.sink = SyslogSink(self.root / "syslog.sock", self.logs["cyrus"])
        out = self.root / "logs" / "cyrus.start.out"
        env = {**prefix_env(), "R": str(self.root)}
        master = [str(CYRUS_MASTER), "-C", str(self.root / "imapd.conf")]
        master += ["-M", str(self.root / "cyrus.conf"), "-p", str(self.root / "master.pid"), "-d"]
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT]
        try:
            with out.open("wb") as f:
                proc = subprocess.run(
                    [*argv, "sh", *master],
                    stdin=subprocess.DEVNULL,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=30,
                )
            if proc.returncode != 0:
                said = out.read_text(errors="replace").strip()[-2000:]
                raise ServerError(f"cyrus master did not start (exit {proc.returncode}): {said}")
            self.record("cyrus", self.root / "master.pid")
            wait_ports(self.ports, "cyrus", self.log_tails())
            self.create_mailboxes()
        except BaseException:
            self.stop()
            raise
        return self

    def create_mailboxes(self) -> None:
        """Every user's INBOX, created by the admin; one seeded message where SEEDED says."""
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_pem))
        imap = imaplib.IMAP4_SSL(HOST, self.ports["imaps"], ssl_context=ctx, timeout=10)
        try:
            imap.login(ADMIN, ADMIN_PASSWORD)
            for u in self.users:
                box = f"user/{u}"
                typ, data = imap.create(box)
                if typ != "OK":
                    raise ServerError(f"cyrus: CREATE {box} failed: {data!r}\n{self.log_tails()}")
                if u in SEEDED:
                    imap.setacl(box, ADMIN, "lrswipkxtecda")
                    msg = SEED_MESSAGE.replace(b"{to}", u.encode())
                    typ, data = imap.append(box, "", None, msg)
                    if typ != "OK":
                        raise ServerError(f"cyrus: APPEND to {box} failed: {data!r}")
                    imap.deleteacl(box, ADMIN)
            imap.logout()
        finally:
            with contextlib.suppress(OSError):
                imap.shutdown()

    def stop(self) -> None:
        super().stop()
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    # evidence ------------------------------------------------------------------------------
    def mailbox_snapshot(self) -> dict[str, list[str]]:
        """Every message file in the spool (Cyrus 3 files mailboxes by unique id, and keeps
        flags in cyrus.index: a flag change shows in the auditlog and in telemetry instead)."""
        spool = self.root / "spool"
        found = [
            os.path.relpath(os.path.join(d, f), spool)
            for d, _dirs, files in os.walk(spool)
            for f in files
            if re.fullmatch(r"\d+\.", f)
        ]
        return {"spool": sorted(found)}

    def rawlogs(self) -> dict[str, str]:
        """Telemetry: every line each user's sessions exchanged after login, by file."""
        out = {}
        for u in self.users:
            d = self.root / "lib" / "log" / u
            for f in sorted(d.iterdir()) if d.is_dir() else ():
                out[f"{u}/{f.name}"] = f.read_text(errors="replace")
        return out
