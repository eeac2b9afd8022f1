"""Progress on stderr: what the run waits for now, from the first moment; silent when piped.

The run announces its steps (``StepStart``) and how many checks it will report (``Planned``)
through a typed callback; these tests collect those events from a real run, draw the line from
them with a hand-driven clock, and run the command with stderr on a pseudo-terminal.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from peers import LineServer

from maildiag.config import RunConfig
from maildiag.models import Observation, Planned, RunEvent, Status, StepStart, Summary
from maildiag.options import check_config, parse_server
from maildiag.pipeline import check_mailbox
from maildiag.report.progress import Progress
from maildiag.rulebase import RuleBase


@pytest.fixture(scope="module")
def rules() -> RuleBase:
    return RuleBase.load()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_line_says_what_is_waited_for_and_how_long_is_left(rules: RuleBase) -> None:
    clock = Clock()
    progress = Progress("en", rules, io.StringIO(), clock=clock, animate=False)
    on_event, on_observation = progress.listener()
    on_event(Planned(18))
    assert progress.line() == "checking: 0/18"
    on_event(StepStart("dns", "example.test", 12.0, clock.now, "dns"))
    assert progress.line() == "0/18 example.test: finding the servers, 12 s left"
    clock.now += 4.5
    on_event(StepStart("smtp.tls", "smtp.example.test:465", 10.0, clock.now, "smtp"))
    # the step waited for longest leads; the others are counted
    assert progress.line() == "0/18 example.test: finding the servers, 8 s left (+1)"
    on_observation(Observation("dns", Status.OK, Summary("dns.domain")))
    clock.now += 9.2
    assert progress.line() == "1/18 smtp.example.test:465: TLS handshake, 1 s left"
    clock.now += 5
    assert progress.line().endswith("TLS handshake, 0 s left")  # never below zero

    ru = Progress("ru", rules, io.StringIO(), clock=clock, animate=False)
    on_event, _ = ru.listener()
    on_event(Planned(5))
    on_event(StepStart("imap.greeting", "imap.example.test:993", 10.0, clock.now, "imap"))
    assert ru.line() == "0/5 imap.example.test:993: ожидание приветствия, осталось 10 с"


def test_several_runs_share_one_line(rules: RuleBase) -> None:
    progress = Progress("en", rules, io.StringIO(), clock=Clock(), animate=False)
    first, _ = progress.listener("a")
    second, seen = progress.listener("b")
    first(Planned(7))
    second(Planned(7))
    seen(Observation("dns", Status.OK, Summary("dns.domain")))
    assert progress.line() == "checking: 1/14"


def test_the_line_is_drawn_over_itself_and_erased(rules: RuleBase) -> None:
    stream = io.StringIO()
    progress = Progress("en", rules, stream, clock=Clock(), width=60)
    on_event, _ = progress.listener()
    on_event(Planned(3))  # drawn at once, not a tick later
    first = stream.getvalue()
    assert first.startswith("\r") and "checking: 0/3" in first
    on_event(StepStart("clock", "pool.ntp.org", 10.0, time.monotonic(), "clock"))
    time.sleep(0.5)
    progress.close()
    out = stream.getvalue()
    assert "pool.ntp.org: asking the time server" in out
    assert all(len(part) <= 60 for part in out.split("\r"))  # never wider than the terminal
    assert out.endswith("\r") and out.split("\r")[-2].strip() == ""  # erased at the end
    assert "\x1b" not in out  # no escape a legacy console would print


def test_a_run_announces_every_step_it_takes(
    smtp_server: Callable[..., Any], certs: Any, closed_port: int
) -> None:
    smtp = smtp_server("starttls")
    values = {
        "address": "alice@example.test",
        "smtp": parse_server("smtp")(f"127.0.0.1:{smtp.port}/starttls"),
        "pop3": parse_server("pop3")(f"127.0.0.1:{closed_port}/ssl"),
        "ca_file": str(certs.ca_pem),
        "clock": False,
        "timeout": 4.0,
        "alternatives": False,
    }
    config: RunConfig = check_config(values, password=None)
    events: list[RunEvent] = []
    check_mailbox(config, rules=RuleBase.load(), on_event=events.append)
    planned = [e.checks for e in events if isinstance(e, Planned)]
    assert planned == [13, 13]  # from the first moment, then again once the servers are known
    steps = [e for e in events if isinstance(e, StepStart)]
    assert steps[0].check == "dns" and steps[0].where == "example.test"
    smtp_steps = [e.check for e in steps if e.lane.startswith("smtp://")]
    # STARTTLS: the capabilities are read before the handshake and again after it
    assert smtp_steps == [
        "smtp.connect",
        "smtp.greeting",
        "smtp.capabilities",
        "smtp.tls",
        "smtp.capabilities",
        "smtp.auth",
    ]
    assert {e.where for e in steps if e.lane.startswith("smtp://")} == {f"127.0.0.1:{smtp.port}"}
    # each step's own limit: the timeout, but a first greeting byte is awaited 3 s at most
    # before implicit TLS is tried (probes.session.SILENCE_WAIT)
    assert [e.timeout for e in steps if e.lane.startswith("smtp://")] == [4, 3, 4, 4, 4, 4]
    pop3 = [e.check for e in steps if e.lane.startswith("pop3://")]
    assert pop3 == ["pop3.connect"]  # refused: nothing more is waited for

    # an alternative tried for the refused POP3 port (the other standard port, 110) adds its
    # checks to the plan: the count always ends at what the report holds
    events.clear()
    config = check_config({**values, "alternatives": True}, password=None)
    report = check_mailbox(config, rules=RuleBase.load(), on_event=events.append)
    planned = [e.checks for e in events if isinstance(e, Planned)]
    tried = sum(len(a.checks) for a in report.alternatives)
    assert tried and planned == [13, 13, 13 + tried] == [13, 13, len(report.checks) + tried]


def run_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """The command with stderr on a pseudo-terminal (stdout piped): what each one shows."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maildiag", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return proc.wait(timeout=60), out, b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_progress_on_a_terminal_and_not_in_a_pipe(line_server: Callable[..., LineServer]) -> None:
    silent = line_server(lambda conn: None, accept=False)  # connects, then says nothing
    args = ["check", "alice@example.test", "--smtp", f"127.0.0.1:{silent.port}/starttls"]
    args += ["--no-clock", "--timeout", "0.5"]
    code, out, err = run_on_a_terminal(args)
    assert code == 2
    assert f"127.0.0.1:{silent.port}: waiting for the greeting, 1 s left" in err
    assert "/8 " in err  # done/total: dns, clock and six SMTP checks
    assert err.endswith("\r")  # erased before the report
    assert "\r" not in out and out.startswith("✖ alice@example.test")

    piped = subprocess.run(
        [sys.executable, "-m", "maildiag", *args], capture_output=True, text=True, timeout=60
    )
    assert piped.returncode == 2 and piped.stderr == ""  # a pipe or a log never sees it
