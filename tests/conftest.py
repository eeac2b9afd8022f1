"""Shared fixtures: certificates, SMTP/IMAP/POP3 peers on 127.0.0.1, and a CLI runner.

Tests never touch an address outside 127.0.0.0/8 or ::1. ``run_cli`` runs the real entry point
in-process (fast) and returns exit code, stdout and stderr; ``run_cli_subprocess`` runs
``python -m maildiag`` for the few tests that must see a fresh interpreter.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from peers import (  # noqa: E402
    Certs,
    LineServer,
    MailboxServerConfig,
    SmtpServerConfig,
    free_port,
    imap_handler,
    make_certs,
    pop3_handler,
    smtp_handler,
)

ROOT = Path(__file__).resolve().parent.parent
NETGUARD = Path(__file__).resolve().parent / "netguard"


def pytest_configure(config: pytest.Config) -> None:
    """Record every attempt, in this process or any Python process a test starts, to reach an
    address outside the loopback range; the session fails if there was one."""
    import tempfile

    worker = hasattr(config, "workerinput")  # a pytest-xdist worker: the controller's log
    if worker and os.environ.get("MAILDIAG_NETGUARD_LOG"):
        log = Path(os.environ["MAILDIAG_NETGUARD_LOG"])
    else:
        log = Path(tempfile.mkstemp(prefix="maildiag-netguard-", suffix=".log")[1])
        os.environ["MAILDIAG_NETGUARD_LOG"] = str(log)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(NETGUARD), os.environ.get("PYTHONPATH", "")) if p
        )
        # the process that reports the session (with xdist, the controller) reads the log
        config.stash[_NETGUARD_KEY] = log
    if str(NETGUARD) not in sys.path:
        sys.path.insert(0, str(NETGUARD))
    import netguard_core

    netguard_core.install(str(log))


_NETGUARD_KEY = pytest.StashKey[Path]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log = session.config.stash.get(_NETGUARD_KEY, None)
    if log is None or not log.exists():
        return
    text = log.read_text(encoding="utf-8", errors="replace")
    log.unlink()
    if text.strip():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "network guard: a test reached outside 127.0.0.0/8 and ::1:\n" + text[:6000]
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:  # pragma: no cover
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No user rules or locale leak into tests; rule caches go to a temporary directory."""
    monkeypatch.delenv("MAILDIAG_RULES", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


_RULES: list[Any] = []


def render(summary: Any, lang: str = "en") -> str:
    """A ``Summary`` in words, from the built-in rules/ui-report.yaml."""
    if not _RULES:
        from maildiag.rulebase import RuleBase

        _RULES.append(RuleBase.load(cache=False))
    return str(_RULES[0].summary_text(summary, lang))


def english(obs: Any) -> str:
    """An observation's summary as JSON shows it."""
    return render(obs.summary)


def as_command(fn: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """A command's function called as the CLI calls it: its ``UsageError`` becomes one
    ``maildiag: ...`` line on stderr and exit 3 (``cli.main``)."""
    from maildiag.errors import ExitCode, UsageError

    try:
        return int(fn(*args, **kwargs))
    except UsageError as exc:
        sys.stderr.write(f"maildiag: {exc}\n")
        return ExitCode.ERROR


def run_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    from maildiag.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    if env:
        os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return CliResult(int(code), out.getvalue(), err.getvalue())


def run_cli_subprocess(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: str | None = None
) -> CliResult:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "maildiag", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return run_cli


# -- SMTP peers (aiosmtpd) ---------------------------------------------------------------------


@pytest.fixture
def smtp_server(certs: Certs) -> Iterator[Callable[..., Any]]:
    """Factory: ``smtp_server(mode="starttls"|"ssl"|"plain", handler=..., **controller_kw)``."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    started: list[Any] = []

    def make(mode: str = "starttls", handler: Any = None, tls: Any = None, **kw: Any) -> Any:
        ctx = tls or certs.valid
        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": free_port()}
        if mode == "ssl":
            options["ssl_context"] = ctx
        elif mode == "starttls":
            options["tls_context"] = ctx
            options.setdefault("require_starttls", False)
        options.update(kw)
        controller = Controller(handler or Sink(), **options)
        controller.start()
        started.append(controller)
        return controller

    yield make
    for c in started:
        c.stop()


@pytest.fixture
def smtp_peers(certs: Certs) -> Iterator[Callable[..., Any]]:
    """Factory of recording aiosmtpd peers (tests/test_auth_support.py): handler, users, mode."""
    from test_auth_support import smtp_peer

    started: list[Any] = []

    def make(handler: Any, **kw: Any) -> Any:
        controller = smtp_peer(certs, handler, **kw)
        started.append(controller)
        return controller

    yield make
    for controller in started:
        controller.stop()


@pytest.fixture
def line_server() -> Iterator[Callable[..., LineServer]]:
    servers: list[LineServer] = []

    def make(handler: Callable[..., None], **kw: Any) -> LineServer:
        server = LineServer(handler, **kw)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def imap_server(line_server: Callable[..., LineServer], certs: Certs) -> Callable[..., LineServer]:
    """Factory: ``imap_server(implicit_tls=False, **MailboxServerConfig fields)``."""

    def make(implicit_tls: bool = False, **kw: Any) -> LineServer:
        cfg = MailboxServerConfig(**kw)
        return line_server(imap_handler(cfg), tls=certs.valid if implicit_tls else None)

    return make


@pytest.fixture
def pop3_server(line_server: Callable[..., LineServer], certs: Certs) -> Callable[..., LineServer]:
    def make(implicit_tls: bool = False, **kw: Any) -> LineServer:
        cfg = MailboxServerConfig(**kw)
        return line_server(pop3_handler(cfg), tls=certs.valid if implicit_tls else None)

    return make


@pytest.fixture
def scripted_smtp(
    line_server: Callable[..., LineServer], certs: Certs
) -> Callable[..., tuple[LineServer, SmtpServerConfig]]:
    """Factory: ``scripted_smtp(implicit_tls=True, **SmtpServerConfig fields)`` -> (server, its
    config); a line-scripted submission server (OAuth2 too), for what aiosmtpd cannot say."""

    def make(implicit_tls: bool = True, **kw: Any) -> tuple[LineServer, SmtpServerConfig]:
        cfg = SmtpServerConfig(**kw)
        server = line_server(smtp_handler(cfg), tls=certs.valid if implicit_tls else None)
        return server, cfg

    return make


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (connect is refused)."""
    return free_port()
