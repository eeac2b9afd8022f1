"""Fixtures for the integration suite: real Postfix, Dovecot, dnsmasq, Exim and Cyrus on 127.0.0.1.

``mail_servers`` (session) starts Postfix, Dovecot and dnsmasq once (see servers.py) and stops
them by pid at the end, whatever the tests did; ``exim`` and ``cyrus`` (session) do the same for
the server families unpacked into a private prefix (prefix.py, exim.py, cyrus.py), the first time
a test asks for them. When the binaries are missing (install them with
scripts/integration-deps.sh) or we are not root, every test here is skipped with one reason,
except under ``CI=true``, where that is a failure: CI must prove the suite, not skip it.

A failing test gets the servers' log lines written during it as report sections
("postfix log", "dovecot log", "dnsmasq log", and "exim log", "cyrus log" once they run).

``maildiag`` runs the CLI against them and collects Postfix's and Dovecot's evidence;
``check_exim``, ``check_cyrus`` and ``check_both`` the same with Exim's and Cyrus's.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from .cyrus import CyrusServer
from .exim import EximServer
from .prefix import CYRUS_BINARIES, EXIM, EXIM_USER, Family, missing
from .servers import MailServers, ServerError, missing_binaries, new_root

_MARK = pytest.StashKey[tuple[MailServers, dict[str, int]]]()
_TIMINGS: dict[str, float] = {}
_FAMILIES: list[Family] = []  # Exim, Cyrus: started on first use, their logs join failures
LOG_LINES_ON_FAILURE = 120


def _unavailable() -> str | None:
    missing = missing_binaries()
    if missing:
        return (
            "Postfix/Dovecot/dnsmasq not installed (missing " + ", ".join(missing) + "): "
            "run scripts/integration-deps.sh"
        )
    if os.geteuid() != 0:
        return "the integration servers must be started as root (Postfix's master needs it)"
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _start(attempts: int = 2) -> MailServers:
    """Start the servers; once more on fresh ports if a port we picked was taken meanwhile."""
    for attempt in range(1, attempts + 1):
        servers = MailServers(new_root())
        atexit.register(servers.stop)  # belt and braces, should teardown itself be skipped
        try:
            return servers.start()
        except ServerError as exc:
            servers.cleanup()
            if attempt == attempts:
                pytest.fail(str(exc), pytrace=False)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def mail_servers() -> Iterator[MailServers]:
    reason = _unavailable()
    if reason:
        if _in_ci():
            pytest.fail(f"integration servers unavailable under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    servers = _start()
    t = servers.timings
    _TIMINGS.update(configs_certs=t.configs_s, start=t.start_s, ready=t.ready_s)
    try:
        yield servers
    finally:
        t0 = time.monotonic()
        servers.stop()
        _TIMINGS["stop"] = time.monotonic() - t0
        if not os.environ.get("MAILDIAG_IT_KEEP"):
            servers.cleanup()


@pytest.fixture(autouse=True)
def _server_log_mark(request: pytest.FixtureRequest) -> None:
    # a test of Exim or Cyrus is skipped (or failed, under CI) for their reasons before anything
    # starts; then every test needs the Postfix/Dovecot/dnsmasq servers (DNS, certificates)
    names = set(request.fixturenames)
    if names & {"exim", "check_exim", "check_both"}:
        _gate(_exim_unavailable())
    if names & {"cyrus", "check_cyrus", "check_both"}:
        _gate(_cyrus_unavailable())
    mail_servers: MailServers = request.getfixturevalue("mail_servers")
    mark = mail_servers.log_mark()
    for family in _FAMILIES:
        mark.update(family.log_mark())
    request.node.stash[_MARK] = (mail_servers, mark)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and _MARK in item.stash:
        servers, mark = item.stash[_MARK]
        time.sleep(0.2)  # Postfix logs through postlogd: let the last lines land
        logs = servers.logs_since(mark)
        for family in _FAMILIES:
            logs.update(family.logs_since(mark))
        for name, text in logs.items():
            lines = text.splitlines()[-LOG_LINES_ON_FAILURE:]
            report.sections.append((f"{name} log", "\n".join(lines) or "(nothing logged)"))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMINGS:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in _TIMINGS.items())
        terminalreporter.write_line(f"integration servers: {parts}")


# ------------------------------------------------------------------------------------------
# running the real CLI

PASSWORD_ENV = "MAILDIAG_IT_PASSWORD"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class CheckRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)  # empty for text output
    password: str | None = None
    logs: dict[str, str] = field(default_factory=dict)  # what the servers logged meanwhile
    rawlog: dict[str, str] = field(default_factory=dict)  # Dovecot post-login commands meanwhile
    mailboxes_before: dict[str, list[str]] = field(default_factory=dict)
    mailboxes_after: dict[str, list[str]] = field(default_factory=dict)
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)

    def checks(self, check_id: str) -> list[dict[str, Any]]:
        assert self.report, "no JSON report: this run asked for text output"
        return [c for c in self.report["checks"] if c["id"] == check_id]

    def check(self, check_id: str, port: int | None = None) -> dict[str, Any]:
        found = [c for c in self.checks(check_id) if port is None or c.get("port") == port]
        assert found, f"no check {check_id!r} (port {port}) in report: {self.ids()}"
        return found[0]

    def ids(self) -> list[tuple[str, Any, str]]:
        assert self.report, "no JSON report: this run asked for text output"
        return [(c["id"], c.get("port"), c["status"]) for c in self.report["checks"]]

    def categories(self) -> set[str]:
        assert self.report, "no JSON report: this run asked for text output"
        return {f["category"] for f in self.report["findings"]}

    def findings(self, category: str) -> list[dict[str, Any]]:
        assert self.report, "no JSON report: this run asked for text output"
        return [f for f in self.report["findings"] if f["category"] == category]

    def explain(self) -> str:
        """What to print when an assertion fails: the command, its exit code, its output."""
        out = self.stdout if len(self.stdout) < 6000 else self.stdout[:6000] + "..."
        return (
            f"argv: {' '.join(self.argv)}\nexit: {self.returncode}\n"
            f"stdout:\n{out}\nstderr:\n{self.stderr[-3000:]}"
        )


def _settled_logs(servers: MailServers, mark: dict[str, int]) -> dict[str, str]:
    """The servers' log lines since ``mark``, once Postfix has logged the end of every SMTP
    session that began in them (it logs through postlogd, a moment after the client left)."""
    deadline = time.monotonic() + 3
    while True:
        time.sleep(0.05)
        logs = servers.logs_since(mark)
        pf = logs["postfix"]
        balanced = len(re.findall(r"\]: connect from ", pf)) <= len(
            re.findall(r"\]: disconnect from ", pf)
        )
        if balanced or time.monotonic() > deadline:
            return logs


class Evidence(Protocol):
    """What a test reads from a server family around one maildiag run (servers.py, prefix.py)."""

    def log_mark(self) -> dict[str, int]: ...
    def rawlogs(self) -> dict[str, str]: ...
    def mailbox_snapshot(self) -> dict[str, list[str]]: ...
    def queued_files(self) -> list[str]: ...


class RunCheck(Protocol):
    def __call__(
        self,
        address: str,
        *args: str,
        password: str | None = None,
        json_output: bool = True,
        timeout: float = 5,
    ) -> CheckRun: ...


def run_check(
    servers: MailServers,
    evidence: Evidence,
    settle: Callable[[dict[str, int]], dict[str, str]],
    address: str,
    args: tuple[str, ...],
    *,
    password: str | None,
    json_output: bool,
    timeout: float,
    counts: Callable[[], dict[str, int]] = dict,
) -> CheckRun:
    """``python -m maildiag check ADDRESS --json`` (DNS from our dnsmasq, our CA trusted), with
    ``evidence`` read before and after: the logs written meanwhile (once ``settle`` says the
    server is done), post-login commands, mailbox and queue state."""
    argv = [
        sys.executable,
        "-m",
        "maildiag",
        "check",
        address,
        "--resolver",
        servers.resolver,
        "--ca-file",
        str(servers.ca_pem),
        "--no-clock",
        "--timeout",
        str(timeout),
        "--lang",
        "en",
        *args,
    ]
    if json_output:
        argv.append("--json")
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env.pop("MAILDIAG_RULES", None)
    if password is not None:
        env[PASSWORD_ENV] = password
        argv += ["--password-env", PASSWORD_ENV]
    mark = evidence.log_mark()
    rawlogs_before = set(evidence.rawlogs())
    mailboxes_before = evidence.mailbox_snapshot()
    counts_before = counts()
    t0 = time.monotonic()
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    result = CheckRun(
        argv,
        proc.returncode,
        proc.stdout,
        proc.stderr,
        time.monotonic() - t0,
        password=password,
    )
    result.logs = settle(mark)
    result.rawlog = {k: v for k, v in evidence.rawlogs().items() if k not in rawlogs_before}
    result.mailboxes_before = mailboxes_before
    result.mailboxes_after = evidence.mailbox_snapshot()
    result.counts_before = counts_before
    result.counts_after = counts()
    result.queued = evidence.queued_files()
    if json_output:
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = None
        if isinstance(report, dict):
            result.report = report
        else:
            pytest.fail(f"stdout is not one JSON report\n{result.explain()}", pytrace=False)
    return result


@pytest.fixture
def maildiag(mail_servers: MailServers) -> RunCheck:
    """Run ``python -m maildiag check ADDRESS --json`` against the servers, return a CheckRun."""

    def run(
        address: str,
        *args: str,
        password: str | None = None,
        json_output: bool = True,
        timeout: float = 5,
    ) -> CheckRun:
        return run_check(
            mail_servers,
            mail_servers,
            lambda mark: _settled_logs(mail_servers, mark),
            address,
            args,
            password=password,
            json_output=json_output,
            timeout=timeout,
            counts=mail_servers.mailbox_counts,
        )

    return run


# ------------------------------------------------------------------------------------------
# Exim and Cyrus (prefix.py): each started once per session, the first time a test needs it


def _family_unavailable(binaries: tuple[Path, ...], what: str) -> str | None:
    gone = missing(binaries)
    if gone:
        return f"{what} not unpacked (missing {', '.join(gone)}): run scripts/integration-deps.sh"
    if os.geteuid() != 0:
        return f"{what} must be started as root"
    return None


def _exim_unavailable() -> str | None:
    return _family_unavailable((EXIM,), "Exim") or (
        None if _user_exists(EXIM_USER) else f"no user {EXIM_USER}: run scripts/integration-deps.sh"
    )


def _cyrus_unavailable() -> str | None:
    return _family_unavailable(CYRUS_BINARIES, "Cyrus IMAP")


def _gate(reason: str | None) -> None:
    if reason:
        if _in_ci():
            pytest.fail(f"integration servers unavailable under CI: {reason}", pytrace=False)
        pytest.skip(reason)


def _start_family(family: Family) -> None:
    atexit.register(family.stop)
    t0 = time.monotonic()
    try:
        family.start()
    except ServerError as exc:
        family.cleanup()
        pytest.fail(str(exc), pytrace=False)
    _TIMINGS[f"{family.name}_start"] = time.monotonic() - t0
    _FAMILIES.append(family)


def _stop_family(family: Family) -> None:
    _FAMILIES.remove(family)
    t0 = time.monotonic()
    family.stop()
    _TIMINGS[f"{family.name}_stop"] = time.monotonic() - t0
    if not os.environ.get("MAILDIAG_IT_KEEP"):
        family.cleanup()


@pytest.fixture(scope="session")
def exim(request: pytest.FixtureRequest) -> Iterator[EximServer]:
    """Exim on free ports (exim.py), with the Postfix/Dovecot suite's certificates."""
    _gate(_exim_unavailable())
    mail_servers: MailServers = request.getfixturevalue("mail_servers")
    server = EximServer(certs=mail_servers.certs)
    _start_family(server)
    yield server
    _stop_family(server)


@pytest.fixture(scope="session")
def cyrus(request: pytest.FixtureRequest) -> Iterator[CyrusServer]:
    """Cyrus IMAP and POP3 on free ports (cyrus.py), with the suite's certificates."""
    _gate(_cyrus_unavailable())
    mail_servers: MailServers = request.getfixturevalue("mail_servers")
    server = CyrusServer(certs=mail_servers.certs)
    _start_family(server)
    yield server
    _stop_family(server)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _family_runner(servers: MailServers, family: Family) -> RunCheck:
    def run(
        address: str,
        *args: str,
        password: str | None = None,
        json_output: bool = True,
        timeout: float = 5,
    ) -> CheckRun:
        return run_check(
            servers,
            family,
            family.settle,
            address,
            args,
            password=password,
            json_output=json_output,
            timeout=timeout,
        )

    return run


@pytest.fixture
def check_exim(mail_servers: MailServers, exim: EximServer) -> RunCheck:
    """Like ``maildiag``, with Exim's evidence (its mainlog, its spool)."""
    return _family_runner(mail_servers, exim)


@pytest.fixture
def check_cyrus(mail_servers: MailServers, cyrus: CyrusServer) -> RunCheck:
    """Like ``maildiag``, with Cyrus's evidence (its syslog, telemetry, message files)."""
    return _family_runner(mail_servers, cyrus)


@pytest.fixture
def check_both(mail_servers: MailServers, exim: EximServer, cyrus: CyrusServer) -> RunCheck:
    """One run against Exim and Cyrus together: Cyrus's evidence, Exim's logs beside it."""
    both = _Both(exim, cyrus)
    return _family_runner(mail_servers, both)  # type: ignore[arg-type]


class _Both:
    """Exim's and Cyrus's evidence as one (for runs that check a mailbox on both)."""

    name = "exim+cyrus"

    def __init__(self, exim: EximServer, cyrus: CyrusServer) -> None:
        self.parts: tuple[Family, ...] = (exim, cyrus)

    def log_mark(self) -> dict[str, int]:
        return {k: v for p in self.parts for k, v in p.log_mark().items()}

    def settle(self, mark: dict[str, int]) -> dict[str, str]:
        return {k: v for p in self.parts for k, v in p.settle(mark).items()}

    def rawlogs(self) -> dict[str, str]:
        return {k: v for p in self.parts for k, v in p.rawlogs().items()}

    def mailbox_snapshot(self) -> dict[str, list[str]]:
        return {k: v for p in self.parts for k, v in p.mailbox_snapshot().items()}

    def queued_files(self) -> list[str]:
        return [f for p in self.parts for f in p.queued_files()]
