"""What a run never does, whatever the input: outlive its deadline, hang on a rule, crash with a
traceback, obey escape codes in a server's words, or open more than its cap of connections.

Each test feeds one hostile thing to the real command — a server that drips its autoconfig
answer a byte at a time, a user rule that backtracks for minutes, a config nested 50,000 deep
or built to blow up in memory, a password that is not UTF-8, a closed pipe, an ASCII-only
terminal, ESC and bidi overrides in a server's reply, 20 targets on one server — and checks what
the user gets: the exit code, one line on stderr, the report. The runs that must end in time
run in a child process, which reports its wall time and peak RSS (printed with ``-s``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dnsserver
import pytest
import trustme
from conftest import run_cli
from peers import LineServer, PeerConn, free_port

dns_zone = dnsserver.dns_zone  # the fixture: a loopback DNS server per test

ROOT = Path(__file__).resolve().parent.parent


# -- a child process, timed and measured ---------------------------------------------------------

# A launcher that is itself just exec'd forks the child and reports that grandchild's own peak
# RSS (ru_maxrss of a child forked straight from pytest would count pytest's pages).
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


@dataclass
class Child:
    code: int
    out: str
    err: str
    wall: float  # seconds from spawn to exit, interpreter start included
    rss_mb: float


def measure(python_args: list[str], workdir: Path, *, limit: float, env: Any = None) -> Child:
    """Run ``python *python_args`` in a child; fail (not hang) when it outlives ``limit``."""
    rss = workdir / f"rss-{time.monotonic_ns()}"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(rss), *python_args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env if env is not None else _env(workdir),
        timeout=limit,
    )
    wall = time.monotonic() - started
    return Child(proc.returncode, proc.stdout, proc.stderr, wall, int(rss.read_text()) / 1024)


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILDIAG_", "LC_"))}
    env.update(LANG="C.UTF-8", XDG_CACHE_HOME=str(workdir / "cache"))
    return env


# -- the process always ends: an autoconfig host that drips its answer ------------------------

DRIP_SECONDS = 90  # longer than any bound below: only maildiag's own deadline can end the fetch


def dripping(where: str) -> Callable[[PeerConn], None]:
    """An HTTPS peer that sends a valid start, then one byte every 0.2 s — far inside any
    per-read timeout — of the headers (``where="headers"``) or of the body."""

    def handle(peer: PeerConn) -> None:
        while peer.readline(timeout=5) not in (None, ""):
            pass  # the request line and headers, up to the blank line
        start = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
        if where == "body":
            start += b"Content-Length: 100000\r\n\r\n<clientConfig>"
        else:
            start += b"X-Slow: "
        peer.sock.sendall(start)
        for _ in range(DRIP_SECONDS * 5):
            time.sleep(0.2)
            peer.sock.sendall(b"a")

    return handle


# the run's resolver with HTTPS on the test's port instead of 443 (Dns.port_map, which the
# pipeline hands to discovery), then the real command.
_AUTOCONFIG_ON_PORT = (
    "import functools, sys\n"
    "import maildiag.dnsclient as c\n"
    "c.Dns = functools.partial(c.Dns, port_map={443: int(sys.argv[1])})\n"
    "from maildiag.__main__ import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.fixture(scope="module")
def web_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("autoconfig.example.test", "example.test").configure_cert(server_ctx)
    return server_ctx, str(path)


def test_a_dripping_autoconfig_host_cannot_keep_the_process_alive(
    dns_zone: Callable[..., Any], web_ca: tuple[Any, str], tmp_path: Path
) -> None:
    """Headers, then a body, one byte at a time: the report comes, and the process ends within
    the run's deadline (before: it lived until the server stopped dripping)."""
    server_ctx, ca_pem = web_ca
    loop = {"A": ["127.0.0.1"]}
    zone = dns_zone({"example.test": loop, "autoconfig.example.test": loop})
    timeout = 1.0
    deadline = timeout * 12 + 5  # RunConfig.run_deadline
    runs: dict[str, Child] = {}
    peers = {where: LineServer(dripping(where), tls=server_ctx) for where in ("headers", "body")}

    def run(where: str) -> None:
        args = ["check", "carol@example.test", "--resolver", zone.address, "--ca-file", ca_pem]
        args += ["--only", "imap", "--no-clock", "--timeout", f"{timeout:g}", "--json"]
        port = str(peers[where].port)
        runs[where] = measure(["-c", _AUTOCONFIG_ON_PORT, port, *args], tmp_path, limit=60)

    try:
        threads = [threading.Thread(target=run, args=(w,)) for w in peers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    finally:
        for peer in peers.values():
            peer.close()
    for where, child in runs.items():
        print(f"autoconfig drip ({where}): wall {child.wall:.2f} s, peak RSS {child.rss_mb:.1f} MB")
        assert child.code in (1, 2), child.err
        assert "Traceback" not in child.err
        tried = json.loads(child.out)["checks"][0]["data"]["autoconfig"]["tried"]
        assert tried and all(v.startswith("timeout") for v in tried.values()), tried
        assert child.wall < deadline, f"{where}: the process lived {child.wall:.1f} s"
    assert set(runs) == {"headers", "body"}


# -- user rules cannot hang it --------------------------------------------------------------------

_RULE = """rules:
  - id: user.slow
    category: other
    severity: warn
    match:
      text: ['{regex}']
    title: {{en: a user rule, ru: правило пользователя}}
    steps: {{en: [nothing to do], ru: [ничего не делать]}}
    examples: ['{example}']
"""


def _rules_dir(tmp_path: Path, regex: str, example: str = "az!") -> Path:
    d = tmp_path / f"rules-{abs(hash(regex))}"
    d.mkdir()
    (d / "user.yaml").write_text(_RULE.format(regex=regex, example=example), encoding="utf-8")
    return d


@pytest.mark.parametrize(
    ("regex", "problem"),
    [
        (r"(?:a|a){1,60}!!!z", "alternation inside a repeat"),
        (r"\w{0,1000}\w{0,1000}\w{0,1000}", "quantifiers in a row"),
        (r"(?:a?a){1,60}z", "optional pieces"),
    ],
)
def test_rules_lint_refuses_regexes_that_backtrack_for_minutes(
    tmp_path: Path, regex: str, problem: str
) -> None:
    result = run_cli("rules", "lint", str(_rules_dir(tmp_path, regex)))
    assert result.code == 3, result.out + result.err
    assert problem in result.err and "user.slow" in result.err


# Passes the lint (the lookahead hides how far it scans), yet re needs about 20 minutes on the
# reply below: from each of 8000 starts, each of up to 1000 positions looks ahead up to 1000
# characters (1.3 s at 800 characters, growing with the cube of the length).
SLOW_BUT_LINT_CLEAN = r"\w{0,1000}(?=\w{0,1000}!)z"
HOSTILE_TEXT = "-ERR " + "a" * 8000 + "! z"


# In a child process: re holds the GIL while it backtracks, so a thread could not even time out.
_MATCH_IN_CHILD = (
    "import json, sys\n"
    "from maildiag.rulebase import RuleBase\n"
    "rules = RuleBase.load([sys.argv[1]], cache=False)\n"
    "first = [m.rule.id for m in rules.match(sys.argv[2])]\n"
    "again = [m.rule.id for m in rules.match('az!')]\n"
    "print(json.dumps([first, list(rules.timed_out.values()), again]))\n"
)


def test_matching_a_user_rule_is_bounded_in_time(tmp_path: Path) -> None:
    from maildiag.rulebase import RuleBase, regex_problem

    assert regex_problem(SLOW_BUT_LINT_CLEAN) is None
    rules = _rules_dir(tmp_path, SLOW_BUT_LINT_CLEAN)
    child = measure(["-c", _MATCH_IN_CHILD, str(rules), HOSTILE_TEXT], tmp_path, limit=60)
    print(f"lint-clean hostile user regex on 8000 characters: wall {child.wall:.2f} s")
    assert child.code == 0, child.err
    first, timed_out, again = json.loads(child.out)
    assert first == []  # the user's rule ran out of time; no built-in one knows the text
    assert timed_out == [SLOW_BUT_LINT_CLEAN]
    assert again == []  # not run again in this process
    fresh = RuleBase.load([str(rules)], cache=False)
    assert [m.rule.id for m in fresh.match("az!")] == ["user.slow"]  # (it does work)


def test_a_hostile_reply_against_a_hostile_user_rule_ends_within_the_deadline(
    pop3_server: Any, certs: Any, tmp_path: Path
) -> None:
    (tmp_path / "x").mkdir()
    rules = _rules_dir(tmp_path / "x", SLOW_BUT_LINT_CLEAN)
    pop3 = pop3_server(implicit_tls=True, users={"alice@example.test": "x"}, fail_text=HOSTILE_TEXT)
    timeout = 2.0
    args = ["-m", "maildiag", "check", "alice@example.test", "--pop3", f"127.0.0.1:{pop3.port}/ssl"]
    args += ["--only", "pop3", "--no-clock", "--timeout", f"{timeout:g}", "--json"]
    args += ["--ca-file", str(certs.ca_pem), "--password-env", "PW", "--rules", str(rules)]
    env = {**_env(tmp_path), "PW": "secret-pw"}
    child = measure(args, tmp_path, limit=60, env=env)
    print(f"hostile reply vs hostile user rule: wall {child.wall:.2f} s, RSS {child.rss_mb:.1f} MB")
    assert child.code == 2, child.err
    auth = next(c for c in json.loads(child.out)["checks"] if c["id"] == "pop3.auth")
    assert auth["status"] == "fail"
    assert child.wall < timeout * 12 + 5


# -- one line and exit 3, never a traceback ---------------------------------------------------


def test_a_password_that_is_not_utf8_is_a_usage_error() -> None:
    result = run_cli(
        "check", "alice@example.test", "--pop3", "127.0.0.1:9/ssl", "--password-env", "PW",
        env={"PW": "pw\udcff\udcfe"},  # os.environ's form of the bytes b"pw\xff\xfe"
    )  # fmt: skip
    assert result.code == 3
    assert result.err == "maildiag: --password-env PW: the password is not valid UTF-8 text " \
        "(check the variable's encoding)\n"  # fmt: skip


def test_a_config_nested_50000_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("targets: " + "[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    result = run_cli("check", "--config", str(path))
    assert result.code == 3
    assert result.err == f"maildiag: {path}: the config file is nested too deeply\n"


def _merge_bomb(levels: int = 24) -> str:
    """Merge keys (<<) that double at every level: PyYAML before 6.0.4 expands them into
    2**levels entries — gigabytes and minutes — from under 2 KB of text."""
    lines = ["targets: [alice@example.test]", "defaults:", "  <<:"]
    lines.append("    - &L0 {k0: v}")
    for n in range(1, levels + 1):
        lines.append(f"    - &L{n} {{<<: [*L{n - 1}, *L{n - 1}], k{n}: v}}")
    return "\n".join(lines) + "\n"


def test_a_merge_key_bomb_in_a_config_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_merge_bomb(), encoding="utf-8")
    assert path.stat().st_size < 2048
    child = measure(["-m", "maildiag", "check", "--config", str(path)], tmp_path, limit=60)
    print(f"merge-key bomb: wall {child.wall:.2f} s, peak RSS {child.rss_mb:.1f} MB")
    assert child.code == 3 and child.err.startswith("maildiag: ") and child.err.count("\n") == 1
    assert "unknown key" in child.err
    assert child.rss_mb < 100


def test_a_closed_pipe_keeps_the_runs_exit_code(tmp_path: Path) -> None:
    """``maildiag check ... | head -1``: no "Exception ignored" on stderr, and the exit code is
    the report's (2 here), not 1 ("warnings only")."""
    closed = free_port()
    for fmt in ("text", "json"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "maildiag", "check", "alice@example.test", "--format", fmt,
             "--pop3", f"127.0.0.1:{closed}/ssl", "--only", "pop3", "--no-clock"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path),
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the report is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 2, err
        assert err == ""


def test_explain_has_the_cli_error_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**_env(tmp_path), "PYTHONIOENCODING": "ascii"}
    text = "535 5.7.8 Error: authentication failed"
    proc = subprocess.run(
        [sys.executable, "-m", "maildiag", "explain", "--lang", "ru", text],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    # an ASCII console gets the Russian answer transliterated, not an error
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "parol" in proc.stdout and proc.stdout.isascii()

    from maildiag.rulebase import RuleBase

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something we did not foresee")

    monkeypatch.setattr(RuleBase, "explain", broken)
    result = run_cli("explain", text)
    assert result.code == 3
    assert result.err == (
        "maildiag: internal error: RuntimeError: something we did not foresee "
        "(run with --traceback for details, and please report it)\n"
    )


# -- terminal safety ------------------------------------------------------------------------------

# ESC (a colour, then a window title), BEL, a right-to-left override, an isolate pair, and a
# zero-width space: what a terminal (or a CI web page) would obey or hide.
HIDDEN = ("\x1b", "\x07", "\u202e", "\u2066", "\u2069", "\u200b")
SNEAKY = "\x1b[31mred\x1b]0;title\x07 \u202egnp.exe\u202c \u2066iso\u2069 zero\u200bwidth"


def _shown_safely(printed: str) -> None:
    for ch in HIDDEN:
        assert ch not in printed, f"U+{ord(ch):04X} reached the terminal"


def test_escape_codes_and_bidi_overrides_are_shown_escaped(
    pop3_server: Any, certs: Any, tmp_path: Path
) -> None:
    pop3 = pop3_server(implicit_tls=True, greeting=f"-ERR {SNEAKY}")
    base = ["check", "alice@example.test", "--pop3", f"127.0.0.1:{pop3.port}/ssl"]
    base += ["--only", "pop3", "--no-clock", "--ca-file", str(certs.ca_pem), "--timeout", "5"]
    for fmt in ("text", "nagios", "junit"):
        result = run_cli(*base, "--format", fmt)
        assert result.code == 2, result.err
        _shown_safely(result.out + result.err)
        assert "\\u202e" in result.out and "\\x1b" in result.out, fmt
    explained = run_cli("explain", f"550 5.7.1 {SNEAKY}")
    _shown_safely(explained.out)
    log = tmp_path / "mail.log"
    log.write_text(
        "Mar  3 10:00:00 mx postfix/smtp[1]: 4AB12C: to=<a@example.test>, status=bounced "
        f"(host x[1.2.3.4] said: 550 5.1.1 {SNEAKY} (in reply to RCPT TO command))\n",
        encoding="utf-8",
    )
    from_log = run_cli("explain", "--file", str(log))
    assert "\\u202e" in from_log.out
    _shown_safely(from_log.out)


# -- politeness: one cap per server across all targets of a run ----------------------------------


class Counting:
    """An IMAP greeting that takes a moment, counting the connections open at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.most = 0
        self.total = 0

    def __call__(self, peer: PeerConn) -> None:
        with self.lock:
            self.open += 1
            self.total += 1
            self.most = max(self.most, self.open)
        try:
            time.sleep(0.15)
            peer.send("* OK [CAPABILITY IMAP4rev1] ready")
            while (line := peer.readline()) is not None:
                tag, _, rest = line.partition(" ")
                if rest.upper().startswith("CAPABILITY"):
                    peer.send("* CAPABILITY IMAP4rev1")
                    peer.send(f"{tag} OK done")
                elif rest.upper().startswith("LOGOUT"):
                    peer.send("* BYE")
                    peer.send(f"{tag} OK bye")
                    return
                else:
                    peer.send(f"{tag} BAD no")
        finally:
            with self.lock:
                self.open -= 1


def test_the_per_server_cap_holds_across_all_targets_of_a_config(
    line_server: Callable[..., LineServer], tmp_path: Path
) -> None:
    counting = Counting()
    server = line_server(counting)
    targets = "".join(
        f"  - address: user{n}@example.test\n    imap: 127.0.0.1:{server.port}/plain\n"
        for n in range(20)
    )
    config = tmp_path / "targets.yaml"
    config.write_text(
        "max_parallel: 20\ndefaults:\n  only: [imap]\n  clock: false\n  timeout: 5\n"
        f"targets:\n{targets}",
        encoding="utf-8",
    )
    result = run_cli("check", "--config", str(config), "--json")
    print(f"20 targets, max_parallel 20: at most {counting.most} connections at once")
    assert result.code in (0, 1), result.err
    assert counting.total == 20
    assert 1 <= counting.most <= 2  # RunConfig.max_per_host
