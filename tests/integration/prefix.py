"""Exim and Cyrus, unpacked into a private prefix by scripts/integration-deps.sh, and what every
server family of the suite has in common.

Debian's exim4 and cyrus packages conflict with the Postfix and Dovecot this suite also runs, so
they are not installed: their .debs (and the libraries this machine lacks) are unpacked under
``PREFIX`` and run from there with ``LD_LIBRARY_PATH`` pointing into it. ``Family`` is the part
Exim and Cyrus share: a root directory of their own, daemons recorded by pid and start time and
ended only by those, and the evidence a test reads (logs since a mark, mailbox and queue state,
the commands a client sent after logging in).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .servers import HOST, PASSWORDS, ServerError, _descendants, _same_process, _start_time

PREFIX = Path(os.environ.get("MAILDIAG_IT_PREFIX", "/opt/maildiag-it"))
EXIM = PREFIX / "usr/sbin/exim4"
CYRUS_MASTER = PREFIX / "usr/lib/cyrus/bin/master"
CYRUS_BINARIES = (
    CYRUS_MASTER,
    PREFIX / "usr/lib/cyrus/bin/imapd",
    PREFIX / "usr/lib/cyrus/bin/pop3d",
    PREFIX / "usr/sbin/saslpasswd2",
)
EXIM_USER = "Debian-exim"  # the Debian build looks it up by this name at start

# Exim's and Cyrus's users: Postfix/Dovecot's alice and carol, and dave (denied a service on each)
DAVE = "dave@example.test"
FAMILY_PASSWORDS = {**PASSWORDS, DAVE: "Dave-Integration-S3cret-2286"}


def missing(paths: tuple[Path, ...]) -> list[str]:
    return [str(p) for p in paths if not os.access(p, os.X_OK)]


def library_path() -> str:
    """Every directory of the prefix that holds shared libraries, for LD_LIBRARY_PATH."""
    dirs = sorted(
        {
            str(p.parent)
            for pattern in ("lib/*/*.so*", "usr/lib/*/*.so*")
            for p in PREFIX.glob(pattern)
        }
    )
    return os.pathsep.join(dirs)


def sasl_plugins() -> Path:
    """The SASL plugin directory unpacked with Cyrus (PLAIN, LOGIN, sasldb)."""
    found = sorted(PREFIX.glob("usr/lib/*/sasl2"))
    return found[0] if found else PREFIX / "usr/lib/sasl2"


def prefix_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MAILDIAG_"))}
    env["LD_LIBRARY_PATH"] = library_path()
    env["SASL_PATH"] = str(sasl_plugins())
    return env


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in names:
        while True:
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = int(s.getsockname()[1])
            if port not in taken:
                break
        taken.add(port)
        out[name] = port
    return out


def wait_ports(ports: dict[str, int], what: str, tails: str = "", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending and time.monotonic() < deadline:
        for name, port in list(pending.items()):
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    pending.pop(name)
            except OSError:
                pass
        if pending:
            time.sleep(0.05)
    if pending:
        raise ServerError(
            f"{what} not answering after {timeout:.0f}s on {sorted(pending)}\n{tails}"
        )


@dataclass
class Family:
    """One server family's daemons under ``root``; subclasses write configs and start them."""

    name: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="maildiag-it-")))
    started: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    @property
    def logs(self) -> dict[str, Path]:
        raise NotImplementedError

    def start(self) -> Family:
        raise NotImplementedError

    def record(self, what: str, pid_file: Path, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        pid = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pid_file.read_text().split()[0])
                break
            time.sleep(0.02)
        if pid is None:
            raise ServerError(f"{what} started but wrote no pid file\n{self.log_tails()}")
        self.started[what] = (pid, _start_time(pid))

    def stop(self) -> None:
        """End the recorded daemons by pid (start time checked), then their children."""
        masters = {p: st for p, st in self.started.values() if _same_process(p, st)}
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
        import shutil

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

    def settle(
        self, mark: dict[str, int], quiet: float = 0.25, limit: float = 3.0
    ) -> dict[str, str]:
        """The logs since ``mark`` once the daemons are done writing about the client's last
        session (a server logs a session's end as it exits, a moment after the client left):
        when they have not grown for ``quiet`` seconds, or after ``limit``."""
        deadline = time.monotonic() + limit
        size, since = -1, time.monotonic()
        while True:
            now = sum(self.log_mark().values())
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet or time.monotonic() > deadline:
                return self.logs_since(mark)
            time.sleep(0.05)

    def mailbox_snapshot(self) -> dict[str, list[str]]:
        return {}

    def queued_files(self) -> list[str]:
        return []

    def rawlogs(self) -> dict[str, str]:
        return {}
