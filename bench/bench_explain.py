"""Benchmarks for maildiag explain (no asserts; prints rates and ratios).

1. In-process throughput: ``maildiag.explain(text)`` over every rule example plus noisy
   variants (target >= 20,000 messages/s).
2. ``--file`` on a synthetic 100,000-line Postfix log with varied addresses, IPs and queue ids,
   in-process and through the real command (target >= 100,000 lines/s).
3. Cold start: wall time of ``maildiag explain --json TEXT`` as a ratio to ``python -c pass`` of
   the same interpreter (target <= 3), with the rule cache warm.

Run: .venv/bin/python bench/bench_explain.py [--quick]
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import maildiag  # noqa: E402
from maildiag.explaining import explain_log  # noqa: E402
from maildiag.rulebase import RuleBase  # noqa: E402

QUICK = "--quick" in sys.argv


def corpus(rb: RuleBase) -> list[str]:
    texts = [ex["text"] for r in rb.rules for ex in r.examples if ex["text"]]
    rnd = random.Random(7)
    noisy = []
    for t in texts:
        noisy.append(f"2026-03-0{rnd.randint(1, 9)} 12:{rnd.randint(10, 59)}:00 ERROR mailer: {t}")
        noisy.append(f"({rnd.choice(['535', '550', '421'])}, b'{t}')")
    return texts + noisy + ["nothing to see here", "250 2.0.0 Ok: queued as ABC"]


MISSED: list[str] = []  # targets this run did not meet: the exit status says so


def verdict(ok: bool, name: str, word: str = "BELOW") -> str:
    if not ok:
        MISSED.append(name)
    return "OK" if ok else word


def bench_inprocess() -> None:
    rb = RuleBase.load()
    texts = corpus(rb)
    for t in texts:  # warm: compile every regex the corpus needs once
        maildiag.explain(t)
    rounds = 3 if QUICK else 15

    def rates(fn) -> tuple[float, float]:
        """Best and median rate of several rounds: the machine may be busy with others."""
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for t in texts:
                fn(t)
            times.append(time.perf_counter() - start)
        return len(texts) / min(times), len(texts) / statistics.median(times)

    rate, typical = rates(maildiag.explain)
    match_rate, _ = rates(lambda t: rb.explain(t))
    print(
        f"in-process: {len(texts)} distinct texts, best of {rounds} rounds: maildiag.explain() "
        f"{rate:,.0f} messages/s (median round {typical:,.0f}; Finding objects); matching "
        f"only {match_rate:,.0f} messages/s [target >= 20,000] "
        f"{verdict(rate >= 20000, 'explain in-process')}"
    )


def synthetic_postfix_log(path: Path, lines: int) -> None:
    rnd = random.Random(42)
    users = [f"user{i}" for i in range(400)]
    domains = ["example.com", "example.net", "example.org", "mail.example", "corp.example"]
    hosts = [
        ("gmail-smtp-in.l.google.com", "142.250.102.27"),
        ("mx.example.net", "192.0.2.10"),
        ("mx1.mail.example", "198.51.100.7"),
        ("mx.yandex.ru", "77.88.21.249"),
    ]
    templates = [
        (
            40,
            "{ts} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={host}[{ip}]:25, delay=0.5, "
            "delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 OK {qid2})",
        ),
        (15, "{ts} mx postfix/smtpd[{pid}]: connect from unknown[{cip}]"),
        (
            15,
            "{ts} mx postfix/smtpd[{pid}]: disconnect from unknown[{cip}] ehlo=1 mail=1 rcpt=1 "
            "quit=1 commands=4",
        ),
        (
            6,
            "{ts} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{cip}]: 554 5.7.1 "
            "<{rcpt}>: Relay access denied; from=<{sender}> to=<{rcpt}> proto=ESMTP helo=<pc>",
        ),
        (
            6,
            "{ts} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={host}[{ip}]:25, delay=1, "
            "dsn=5.1.1, status=bounced (host {host}[{ip}] said: 550 5.1.1 <{rcpt}>: Recipient "
            "address rejected: User unknown in local recipient table (in reply to RCPT TO "
            "command))",
        ),
        (
            5,
            "{ts} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay=none, delay=30, dsn=4.4.1, "
            "status=deferred (connect to {host}[{ip}]:25: Connection timed out)",
        ),
        (
            5,
            "{ts} mx postfix/smtpd[{pid}]: warning: unknown[{cip}]: SASL LOGIN authentication "
            "failed: UGFzc3dvcmQ6",
        ),
        (
            3,
            "{ts} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={host}[{ip}]:25, delay=2, "
            "dsn=4.2.2, status=deferred (host {host}[{ip}] said: 452 4.2.2 The email account "
            "that you tried to reach is over quota. {qid2} - gsmtp (in reply to RCPT TO command))",
        ),
        (
            3,
            "{ts} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from unknown[{cip}]: 450 4.7.1 "
            "Client host rejected: cannot find your hostname, [{cip}]; from=<{sender}> "
            "to=<{rcpt}> proto=ESMTP helo=<x>",
        ),
        (
            2,
            "{ts} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={host}[{ip}]:25, delay=1, "
            "dsn=5.7.26, status=bounced (host {host}[{ip}] said: 550-5.7.26 This mail is "
            "unauthenticated, which poses a security risk to the sender and Gmail users, and has "
            "been blocked. {qid2} - gsmtp (in reply to end of DATA command))",
        ),
    ]
    weights = [w for w, _ in templates]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            _, tpl = rnd.choices(templates, weights)[0]
            host, ip = rnd.choice(hosts)
            fh.write(
                tpl.format(
                    ts=(
                        f"Mar {1 + i // 50000:2d} "
                        f"{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                    ),
                    pid=rnd.randint(1000, 99999),
                    qid=f"{rnd.getrandbits(40):010X}",
                    qid2=f"{rnd.getrandbits(48):x}",
                    rcpt=f"{rnd.choice(users)}@{rnd.choice(domains)}",
                    sender=f"{rnd.choice(users)}@{rnd.choice(domains)}",
                    host=host,
                    ip=ip,
                    cip=f"203.0.113.{rnd.randint(1, 254)}",
                )
                + "\n"
            )


def bench_log() -> None:
    lines = 20_000 if QUICK else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        synthetic_postfix_log(log, lines)
        rb = RuleBase.load()
        start = time.perf_counter()
        with log.open(encoding="utf-8", errors="replace") as fh:
            report = explain_log(rb, fh, "en")
        elapsed = time.perf_counter() - start
        print(
            f"--file in-process: {lines:,} lines in {elapsed:.3f} s = {lines / elapsed:,.0f} "
            f"lines/s; {report['errors']:,} failure lines in {len(report['groups'])} groups "
            f"[target >= 100,000] {verdict(lines / elapsed >= 100000, 'explain --file')}"
        )
        for g in report["groups"]:
            print(f"    {g['count']:>6}  {g['category'] or '-':<18} {g['rule'] or 'unrecognised'}")
        exe = ROOT / ".venv" / "bin" / "maildiag"
        if exe.exists():
            start = time.perf_counter()
            subprocess.run(
                [str(exe), "explain", "--json", "--file", str(log)], check=True, capture_output=True
            )
            elapsed = time.perf_counter() - start
            print(
                f"--file via the command (incl. start-up): {lines / elapsed:,.0f} lines/s "
                f"({elapsed:.3f} s)"
            )


# Byte-code caches as an installed package has them (pip compiles wheels on install); this
# sandbox sets PYTHONDONTWRITEBYTECODE, which would make every run recompile the sources.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _median_ms(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=ENV)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_cold_start() -> None:
    runs = 7 if QUICK else 25
    py = ROOT / ".venv" / "bin" / "python"
    exe = ROOT / ".venv" / "bin" / "maildiag"
    text = "535 5.7.8 Error: authentication failed: Invalid user or password!"
    if not exe.exists():
        print("cold start: .venv/bin/maildiag is not installed")
        return
    import compileall

    compileall.compile_dir(str(ROOT / "src" / "maildiag"), quiet=1)
    subprocess.run([str(exe), "explain", "--json", text], check=True, capture_output=True, env=ENV)
    base = _median_ms([str(py), "-c", "pass"], runs)
    sys_base = _median_ms(["python3", "-c", "pass"], runs)
    ours = _median_ms([str(exe), "explain", "--json", text], runs)
    module = _median_ms([str(py), "-m", "maildiag", "explain", "--json", text], runs)
    print(
        f"cold start (median of {runs}, warm rule cache): maildiag explain --json {ours:.1f} ms; "
        f"python -c pass {base:.1f} ms (venv), {sys_base:.1f} ms (python3 on PATH); ratio "
        f"{ours / base:.2f} [target <= 3] {verdict(ours / base <= 3, 'cold start', 'ABOVE')}; "
        f"python -m maildiag {module:.1f} ms"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {**ENV, "MAILDIAG_CACHE_DIR": tmp}
        start = time.perf_counter()
        subprocess.run(
            [str(exe), "explain", "--json", text], check=True, capture_output=True, env=env
        )
        print(
            f"first run with an empty cache (YAML parse + validation + cache write): "
            f"{(time.perf_counter() - start) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    bench_inprocess()
    bench_log()
    bench_cold_start()
    if MISSED:
        print("missed: " + ", ".join(MISSED))
        sys.exit(1)
