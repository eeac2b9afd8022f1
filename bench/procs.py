"""Starting maildiag and its peers as a user would, and measuring each run's wall time and peak RSS.

``maildiag_entry()`` is the console script next to this interpreter (else ``python -m``);
``bench_env()`` is the environment every measured run gets: byte-code caches written and read as
an installed copy has them (``PYTHONDONTWRITEBYTECODE`` dropped, ``compile_package()`` first), no
extra rule directory, one locale. ``Launcher.measure()`` runs one command and reaps it with
``os.wait4``, so the peak RSS is the child's own (for a shell script: the largest of its
processes').
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def maildiag_entry() -> list[str]:
    """How a user starts maildiag: the console script next to this interpreter, else -m."""
    script = Path(sys.executable).with_name("maildiag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "maildiag"]


def bench_env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "100", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env.pop("MAILDIAG_RULES", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_package(env: dict[str, str]) -> None:
    """Byte-compile maildiag as ``pip install`` does, so a cold start reads .pyc, as a user's.

    (With PYTHONDONTWRITEBYTECODE set, an editable checkout would recompile every module from
    source on every start: 20+ ms for rulebase.py alone, which no installed copy pays.)
    """
    import maildiag

    package = str(Path(maildiag.__file__).parent)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", package],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


class RunFailed(RuntimeError):
    """A measured command did not end as expected; the message shows the command and its output."""


@dataclass(frozen=True)
class Measured:
    seconds: float
    maxrss_kb: int
    returncode: int
    output: str  # stdout and stderr, first 4000 characters
    cpu_seconds: float = 0.0  # user + system, the process and the children it waited for

    @property
    def rss_mb(self) -> float:
        return self.maxrss_kb / 1024


# The launcher: a bare interpreter (-I -S, nothing imported) that forks and execs each command
# and reaps it with wait4. Why not Popen from this process: Linux carries the high-water RSS of
# the memory a process had before exec() into its ru_maxrss, and a child forked (or vforked) from
# this benchmark, with its servers and TLS, would start at ~40 MB. Forked from the launcher it
# starts at the launcher's few MB (``Launcher.floor_kb``, printed with the results).
_LAUNCHER = r"""
import os, signal, sys, time
inp, out = sys.stdin.buffer, sys.stdout.buffer
child = 0
killed = False
def on_alarm(signum, frame):
    global killed
    killed = True
    os.kill(child, signal.SIGKILL)
signal.signal(signal.SIGALRM, on_alarm)
for line in inp:
    fields = line.rstrip(b"\n").split(b"\0")
    timeout, log, argv = int(fields[0]), fields[1], fields[2:]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    killed = False
    started = time.perf_counter_ns()
    child = os.fork()
    if child == 0:
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    signal.alarm(timeout)
    _, status, usage = os.wait4(child, 0)
    elapsed = time.perf_counter_ns() - started
    signal.alarm(0)
    os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    cpu = round((usage.ru_utime + usage.ru_stime) * 1e6)
    out.write(b"%d %d %d %d %d\n" % (elapsed, usage.ru_maxrss, code, killed, cpu))
    out.flush()
"""


class Launcher:
    """Runs commands one at a time from a small helper process; ``measure`` times one."""

    def __init__(self, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        fd, self._log = tempfile.mkstemp(prefix="maildiag-bench-", suffix=".out")
        os.close(fd)
        self.floor_kb = self.measure(["/bin/true"]).maxrss_kb

    def measure(
        self, cmd: Sequence[str], *, ok: Sequence[int] = (0,), timeout: float = 60.0
    ) -> Measured:
        """Run ``cmd`` once; wall time from fork to reap, peak RSS from wait4's rusage.

        A return code outside ``ok`` raises RunFailed: a benchmark must not time an error path
        by accident. A command still running after ``timeout`` is killed (by its pid) and fails.
        """
        assert self._proc.stdin is not None and self._proc.stdout is not None
        fields = [str(max(1, math.ceil(timeout))), self._log, *map(str, cmd)]
        if any("\0" in f or "\n" in f for f in fields):
            raise ValueError(f"cannot pass {_show(cmd)} to the launcher")
        self._proc.stdin.write("\0".join(fields).encode() + b"\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().split()
        if len(answer) != 5:
            raise RunFailed(f"the launcher died running {_show(cmd)}")
        elapsed_ns, maxrss, code, killed, cpu_us = (int(x) for x in answer)
        with open(self._log, "rb") as f:
            text = f.read(4000).decode("utf-8", "replace")
        if killed:
            raise RunFailed(f"{_show(cmd)} still running after {timeout:g}s; output:\n{text}")
        if code not in ok:
            raise RunFailed(f"{_show(cmd)} exited {code}; output:\n{text}")
        return Measured(elapsed_ns / 1e9, maxrss, code, text, cpu_us / 1e6)

    def measure_chain(
        self, cmds: Sequence[Sequence[str]], *, ok: Sequence[int] = (0,), timeout: float = 60.0
    ) -> Measured:
        """Commands one after another, as ``a; b; c`` in a shell: summed time, largest RSS."""
        runs = [self.measure(c, ok=ok, timeout=timeout) for c in cmds]
        return Measured(
            sum(r.seconds for r in runs),
            max(r.maxrss_kb for r in runs),
            max(r.returncode for r in runs),
            "\n".join(r.output for r in runs),
            sum(r.cpu_seconds for r in runs),
        )

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        os.unlink(self._log)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _show(cmd: Sequence[str]) -> str:
    text = " ".join(str(c) for c in cmd)
    return text if len(text) < 300 else text[:300] + "..."
