"""The text report in the user's language: check summaries and headings from rules/ui-report.yaml.

A probe's summary is a key and its facts (``Summary``); JSON shows the ``en`` template, the text
report the one of the report's language. These tests run loopback peers through the common paths,
check the Russian table has no English summary left, that every key the checks declare has both
translations (and no template is dead), and that every path renders in both languages.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli
from peers import Certs, LineServer, PeerConn

from maildiag.address import parse_address
from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Status, Summary, Target
from maildiag.probes import CHECKS, undeclared
from maildiag.probes.auth import make_login_stage
from maildiag.probes.clock import ClockReading, judge_clock
from maildiag.probes.session import Env, Session
from maildiag.rulebase import RuleBase, plural_form
from maildiag.scheduler import Job, Scheduler

PASSWORD = "s3cret"
ALICE = "alice@example.test"

# English words of summaries that must not survive in the Russian checks table
ENGLISH = re.compile(
    r"\b(connected|certificate|valid|days?|needs|password|reachable|logged|explicit|servers?|"
    r"resolve|given|accepted|without|authentication|refused|connection|greeting|detected|"
    r"speaks|silent|login|failed|earlier|offered|requested|none listed)\b"
)  # lower case:
# upper-case words are protocol keywords (LOGIN, AUTH PLAIN), which stay as they are


@pytest.fixture(scope="module")
def ui() -> RuleBase:
    return RuleBase.load(cache=False)


def norm(text: str) -> str:
    return " ".join(text.split())


def summaries_only(table: str) -> str:
    """The table without check ids and command-line options (they are names, not words)."""
    table = re.sub(r"\b(?:smtp|imap|pop3)\.[a-z]+\b", " ", table)
    return re.sub(r"--[a-z][a-z-]*", " ", table)


def checks_section(out: str) -> str:
    """The lines of the checks table (between the heading and the next blank line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("Проверки", "Checks")))
    table = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        table.append(line)
    return "\n".join(table)


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("check", ALICE, "--no-clock", "--timeout", "3", *args, env=env)


# -- the Russian table, end to end ---------------------------------------------------------------


def test_russian_checks_table_has_no_english_summaries(
    smtp_server: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    certs: Certs,
    closed_port: int,
) -> None:
    smtp = smtp_server("ssl")
    imap = imap_server(starttls=certs.valid)
    args = [
        "--smtp",
        f"127.0.0.1:{smtp.port}/ssl",
        "--imap",
        f"127.0.0.1:{imap.port}/starttls",
        "--pop3",
        f"127.0.0.1:{closed_port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
    ]
    ru = cli(*args, "--lang", "ru")
    assert ru.code == 2, ru.err
    table = checks_section(ru.out)
    english = sorted({m.group(0).lower() for m in ENGLISH.finditer(summaries_only(table))})
    assert not english, f"English left in the Russian table: {english}\n{table}"
    flat = norm(table)
    assert f"соединение с 127.0.0.1:{smtp.port} установлено" in flat
    assert re.search(r"TLSv1\.[23], сертификат действителен ещё \d+ (день|дня|дней)", flat)
    assert "нужен пароль (--password-env или --ask-password)" in flat
    assert f"127.0.0.1:{closed_port} отклоняет подключение" in flat
    assert f"127.0.0.1:{closed_port} недоступен" in flat
    assert "сервер принял MAIL FROM и RCPT TO без авторизации" in flat
    assert "проверка часов отключена (--no-clock или clock: false в файле целей)" in flat
    assert "серверы указаны в команде: имена серверов найдены в DNS: 3 из 3" in flat
    # the server's own words stay as they are
    assert "* OK [CAPABILITY IMAP4rev1] test IMAP ready" in flat
    # the headings come from the same table
    assert "Проверки — источник серверов: указаны в команде" in ru.out
    assert "Что не так и что делать" in ru.out and "(заняло " in ru.out

    en = cli(*args, "--lang", "en")
    flat_en = norm(checks_section(en.out))
    assert f"connected to 127.0.0.1:{smtp.port}" in flat_en
    assert "needs a password (--password-env or --ask-password)" in flat_en
    assert f"127.0.0.1:{closed_port} is not reachable" in flat_en
    assert "explicit servers: 3 of 3 server names resolve" in flat_en
    assert "Checks — servers found via the command line" in en.out
    assert "What is wrong and what to do" in en.out


def test_russian_login_and_wrong_password(
    imap_server: Callable[..., LineServer], pop3_server: Callable[..., LineServer], certs: Certs
) -> None:
    imap = imap_server(implicit_tls=True, users={ALICE: PASSWORD})
    pop3 = pop3_server(implicit_tls=True, users={ALICE: "another"})
    ru = cli(
        "--only",
        "imap,pop3",
        "--imap",
        f"127.0.0.1:{imap.port}/ssl",
        "--pop3",
        f"127.0.0.1:{pop3.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--lang",
        "ru",
        "--password-env",
        "MAILDIAG_TEST_PW",
        env={"MAILDIAG_TEST_PW": PASSWORD},
    )
    flat = norm(checks_section(ru.out))
    assert f"вход под {ALICE} выполнен (LOGIN)" in flat
    assert "сервер отклонил вход (USER/PASS): -ERR" in flat
    assert PASSWORD not in ru.out
    assert not ENGLISH.search(summaries_only(re.sub(r"-ERR.*", "", flat))), flat


def test_multi_target_report_is_rendered_in_russian(
    tmp_path: Path, smtp_server: Callable[..., Any], certs: Certs, closed_port: int
) -> None:
    smtp = smtp_server("ssl")
    config = tmp_path / "targets.yaml"
    config.write_text(
        textwrap.dedent(f"""
        defaults:
          timeout: 3
          clock: false
          only: smtp
          ca_file: {certs.ca_pem}
        targets:
          - address: alice@example.test
            smtp: 127.0.0.1:{smtp.port}/ssl
          - address: bob@example.test
            smtp: 127.0.0.1:{closed_port}/ssl
    """),
        encoding="utf-8",
    )
    result = run_cli("check", "--config", str(config), "--lang", "ru")
    assert result.out.count("Проверки") == 2, result.out + result.err
    flat = norm(result.out)
    assert f"соединение с 127.0.0.1:{smtp.port} установлено" in flat
    assert f"127.0.0.1:{closed_port} недоступен" in flat
    assert "connected to" not in flat and "is not reachable" not in flat


def test_json_summary_stays_english(smtp_server: Callable[..., Any], certs: Certs) -> None:
    smtp = smtp_server("ssl")
    report = cli(
        "--only",
        "smtp",
        "--smtp",
        f"127.0.0.1:{smtp.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--lang",
        "ru",
        "--json",
    ).json
    summaries = {c["id"]: c["summary"] for c in report["checks"]}
    assert summaries["smtp.connect"] == f"connected to 127.0.0.1:{smtp.port}"
    assert "summary_key" not in report["checks"][0]


# -- every key the checks declare has en and ru; no template is dead -----------------------------


def test_every_declared_summary_has_english_and_russian_and_none_is_dead() -> None:
    rules = RuleBase.load(cache=False)
    declared = {key for spec in CHECKS for key in spec.all_summaries()}
    assert len(declared) >= 90, sorted(declared)
    missing = sorted(k for k in declared if f"summary.{k}" not in rules.ui)
    assert not missing, f"declared summary keys without a template: {missing}"
    for key in declared:
        entry = rules.ui[f"summary.{key}"]
        assert entry["en"].strip() and entry["ru"].strip(), key
    defined = {k.removeprefix("summary.") for k in rules.ui if k.startswith("summary.")}
    assert not sorted(defined - declared), (
        f"templates no check declares: {sorted(defined - declared)}"
    )


def test_an_undeclared_summary_or_signal_is_caught() -> None:
    obs = Observation(
        "smtp.tls",
        Status.OK,
        Summary("tls.ok", {"nested": Summary("auth.brand_new")}),
        problems=(),
    )
    assert undeclared(obs) == ["smtp.tls: summary 'auth.brand_new'"]
    from maildiag.models import Problem

    obs = Observation("dns", Status.OK, Summary("dns.domain"), problems=(Problem("tls.expiring"),))
    assert undeclared(obs) == ["dns: signal 'tls.expiring'"]
    assert undeclared(Observation("smtp.nope", Status.OK, Summary("x"))) == [
        "unknown check id 'smtp.nope'"
    ]


def test_report_headings_live_in_the_rule_base() -> None:
    import maildiag.report.text as text

    assert not hasattr(text, "LABELS")
    rules = RuleBase.load(cache=False)
    for name in (
        "report.headline",
        "report.checks",
        "report.found",
        "report.findings",
        "report.notes",
        "report.none",
        "report.evidence",
        "report.ok",
        "report.settings",
        "report.summary",
        "progress.line",
        "progress.idle",
    ):
        assert name in rules.ui, name


def test_rules_lint_accepts_the_report_words() -> None:
    result = run_cli("rules", "lint")
    assert result.code == 0, result.err
    assert (ROOT / "rules" / "ui-report.yaml").is_file()


# -- rendering details ---------------------------------------------------------------------------


def test_plural_forms() -> None:
    ru = "день|дня|дней"
    got = {n: plural_form(n, ru) for n in (0, 1, 2, 4, 5, 11, 12, 14, 21, 22, 25, 101, 111, 212)}
    assert got == {
        0: "дней",
        1: "день",
        2: "дня",
        4: "дня",
        5: "дней",
        11: "дней",
        12: "дней",
        14: "дней",
        21: "день",
        22: "дня",
        25: "дней",
        101: "день",
        111: "дней",
        212: "дней",
    }
    assert plural_form(1, "day|days") == "day" and plural_form(7, "day|days") == "days"


@pytest.mark.parametrize("days,word", [(1, "1 день"), (3, "3 дня"), (212, "212 дней")])
def test_certificate_days_read_naturally(ui: RuleBase, days: int, word: str) -> None:
    summary = Summary("tls.ok", {"version": "TLSv1.3", "days": days})
    assert ui.summary_text(summary, "ru") == f"TLSv1.3, сертификат действителен ещё {word}"
    plural = "day" if days == 1 else "days"
    assert ui.summary_text(summary, "en") == f"TLSv1.3, certificate valid for {days} {plural}"


def test_server_words_are_quoted_verbatim(ui: RuleBase) -> None:
    reply = "554  5.7.1 Go away . {port} [[x]] \x001\x00"
    summary = Summary("greeting.rejected", {"reply": reply})
    assert ui.summary_text(summary, "en") == reply
    assert ui.summary_text(summary, "ru") == f"сервер отказал в сеансе: {reply}"


def test_clock_summaries_in_russian(ui: RuleBase) -> None:
    import datetime as dt

    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for offset, ru, en in [
        (
            0.3,
            "часы компьютера расходятся с sntp:ntp.test:123 не больше чем на 0.3 с",
            "local clock within 0.3 s of sntp:ntp.test:123",
        ),
        (
            3 * 3600,
            "часы компьютера спешат на 3 часа относительно sntp:ntp.test:123",
            "the local clock is 3 hours ahead of sntp:ntp.test:123",
        ),
        (
            -86400 * 2,
            "часы компьютера отстают на 2 дня от sntp:ntp.test:123",
            "the local clock is 2 days behind sntp:ntp.test:123",
        ),
    ]:
        reading = ClockReading(
            offset=offset,
            source="sntp:ntp.test:123",
            reference=now,
            local=now + dt.timedelta(seconds=offset),
            detail={},
        )
        obs = judge_clock(reading)
        assert ui.summary_text(obs.summary, "ru") == ru
        assert ui.summary_text(obs.summary, "en") == en


# -- every path a session can take is declared and reads in both languages ------------------------


def _session(
    target: Target,
    certs: Certs,
    *,
    timeout: float = 3.0,
    password: str | None = None,
    login: bool = True,
) -> list[Observation]:
    seen: list[Observation] = []
    config = RunConfig(ALICE, ca_file=str(certs.ca_pem), timeout=timeout, password=password)
    stage = make_login_stage(config, parse_address(ALICE), None) if login else None
    Session(target, Env(config, seen.append, login_stage=stage)).probe()
    return seen


def _t(service: Service, port: int, security: str) -> Target:
    return Target(service, "127.0.0.1", port, Security(security))


# summaries that are the server's or the library's words alone, in any language
_SAME_IN_BOTH = {"greeting.ok", "capabilities.ok", "net.refused", "net.connect_timeout"}


def test_every_path_renders_in_both_languages(
    smtp_server: Callable[..., Any],
    smtp_peers: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    pop3_server: Callable[..., LineServer],
    line_server: Callable[..., LineServer],
    certs: Certs,
    closed_port: int,
    ui: RuleBase,
) -> None:
    from test_auth_support import PostfixLike, YandexLike

    smtp, imap, pop3 = Service.SMTP, Service.IMAP, Service.POP3
    smtp_peer = smtp_peers

    def silent(peer: PeerConn) -> None:
        peer.readline(timeout=5)

    def imap_on_smtp(peer: PeerConn) -> None:
        peer.send("* OK [CAPABILITY IMAP4rev1] Dovecot ready.")
        peer.readline(timeout=3)

    def busy(peer: PeerConn) -> None:
        peer.send("554 5.7.1 Service unavailable; client host blocked")

    def hangs_up(peer: PeerConn) -> None:
        peer.send("220 mx.test ESMTP")
        peer.readline(timeout=3)  # EHLO, then the connection closes

    # the closed port first: a server started below could be given the same free port
    observations: list[Observation] = _session(_t(smtp, closed_port, "ssl"), certs)
    runs: list[tuple[Target, dict[str, Any]]] = [
        (_t(smtp, smtp_server("ssl").port, "ssl"), {}),
        (_t(smtp, smtp_server("starttls").port, "starttls"), {}),
        (_t(smtp, smtp_server("starttls").port, "auto"), {}),
        (_t(smtp, smtp_server("ssl").port, "auto"), {"timeout": 2}),
        (_t(smtp, smtp_server("plain").port, "plain"), {}),
        (_t(smtp, smtp_server("plain").port, "starttls"), {}),
        (_t(smtp, smtp_server("starttls").port, "ssl"), {}),
        (_t(smtp, smtp_server("ssl").port, "starttls"), {"timeout": 2}),
        (_t(smtp, smtp_server("ssl", tls=certs.expired).port, "ssl"), {}),
        (_t(smtp, smtp_server("starttls", tls=certs.wrong_host).port, "starttls"), {}),
        (_t(smtp, smtp_server("ssl", tls=certs.self_signed).port, "ssl"), {}),
        (_t(smtp, smtp_server("ssl", tls=certs.expiring(10)).port, "ssl"), {}),
        (
            _t(smtp, smtp_peer(PostfixLike(), users={ALICE: PASSWORD}).port, "starttls"),
            {"password": PASSWORD},
        ),
        (
            _t(smtp, smtp_peer(YandexLike(), users={ALICE: "other"}).port, "starttls"),
            {"password": PASSWORD},
        ),
        (_t(smtp, smtp_peer(YandexLike(), users={ALICE: PASSWORD}).port, "starttls"), {}),
        (_t(smtp, smtp_server("ssl").port, "ssl"), {"password": PASSWORD}),
        (_t(smtp, smtp_server("ssl").port, "ssl"), {"login": False}),
        (_t(smtp, line_server(silent).port, "starttls"), {"timeout": 1.0}),
        (_t(smtp, line_server(imap_on_smtp).port, "starttls"), {}),
        (_t(smtp, line_server(busy).port, "starttls"), {}),
        (_t(smtp, line_server(hangs_up).port, "starttls"), {"timeout": 1.0}),
        (
            _t(imap, imap_server(implicit_tls=True, users={ALICE: PASSWORD}).port, "ssl"),
            {"password": PASSWORD},
        ),
        (
            _t(imap, imap_server(implicit_tls=True, users={ALICE: "x"}).port, "ssl"),
            {"password": PASSWORD},
        ),
        (
            _t(imap, imap_server(login_disabled_before_tls=True).port, "plain"),
            {"password": PASSWORD},
        ),
        (_t(imap, imap_server(starttls=certs.valid).port, "starttls"), {}),
        (
            _t(pop3, pop3_server(implicit_tls=True, users={ALICE: PASSWORD}).port, "ssl"),
            {"password": PASSWORD},
        ),
        (_t(pop3, pop3_server(starttls=certs.valid).port, "starttls"), {"password": PASSWORD}),
    ]
    for target, kw in runs:
        observations += _session(target, certs, **kw)

    # run-level checks: the clock disabled, a crashing and a stuck job
    def crash(emit: Callable[[Observation], None]) -> None:
        raise RuntimeError("boom")

    def stuck(emit: Callable[[Observation], None]) -> None:
        time.sleep(3)

    t = Target(Service.SMTP, "127.0.0.1", 1, Security.SSL)
    scheduler = Scheduler()
    scheduler.start(
        [
            Job("crash", ("clock",), crash),
            Job("stuck", ("smtp.connect", "smtp.greeting"), stuck, host="h", target=t),
        ]
    )
    observations += scheduler.collect(0.3)

    used: set[str] = set()
    for obs in observations:
        assert not undeclared(obs), undeclared(obs)
        key = obs.summary.key
        assert f"summary.{key}" in ui.ui, key
        used.add(key)
        en = ui.summary_text(obs.summary, "en")
        ru = ui.summary_text(obs.summary, "ru")
        assert en and "?" not in en.replace(str(obs.summary.params), ""), (key, en)
        assert ru and ru != en or key in _SAME_IN_BOTH, (key, ru)
    # the paths above reach these (a sample that proves the runs went where they should)
    expected = {
        "connect.ok",
        "net.refused",
        "greeting.ok",
        "greeting.detected_ssl",
        "greeting.detected_plain",
        "greeting.mismatch",
        "greeting.silent",
        "greeting.wrong_protocol",
        "greeting.rejected",
        "tls.ok",
        "tls.cert_expired",
        "tls.hostname_mismatch",
        "tls.cert_untrusted",
        "tls.plain_requested",
        "tls.starttls_not_offered",
        "capabilities.ok",
        "auth.ok",
        "auth.refused",
        "auth.needs_password",
        "auth.not_required",
        "auth.login_disabled",
        "sender.ok",
        "auth.required",
        "sender.login_failed",
        "auth.no_mechanism_offered",
        "skip.unreachable",
        "skip.silent",
        "skip.wrong_protocol",
        "skip.rejected",
        "skip.login_not_in_run",
        "internal_error",
        "run.deadline",
        "skip.unfinished",
    }
    assert expected <= used, sorted(expected - used)


def test_dns_facts_render_in_russian(ui: RuleBase) -> None:
    summary = Summary(
        "dns.domain",
        {
            "domain": "example.test",
            "facts": [
                Summary("dns.resolver_silent", {"resolver": "127.0.0.1:53"}),
                Summary("dns.mx", {"hosts": "a.test, b.test, c.test ..."}),
                Summary("dns.resolved", {"resolved": 1, "servers": 3}),
            ],
        },
    )
    assert ui.summary_text(summary, "en") == (
        "example.test: resolver 127.0.0.1:53 did not answer; MX a.test, "
        "b.test, c.test ...; 1 of 3 server names resolve"
    )
    assert ui.summary_text(summary, "ru") == (
        "example.test: DNS-сервер 127.0.0.1:53 не ответил; "
        "MX: a.test, b.test, c.test ...; имена серверов найдены в DNS: 1 из 3"
    )


@pytest.mark.parametrize(
    "zone,ru",
    [
        ({}, "example.test: домена example.test не существует"),
        (
            {
                "example.test": {"MX": ["10 mx.example.test."]},
                "mx.example.test": {"A": ["127.0.0.1"]},
            },
            "example.test: MX: mx.example.test",
        ),
    ],
)
def test_dns_check_from_a_real_lookup(zone: dict[str, Any], ru: str) -> None:
    from dnsserver import DnsServer

    with DnsServer(zone) as server:
        args = [
            "check",
            ALICE,
            "--no-clock",
            "--timeout",
            "2",
            "--only",
            "smtp",
            "--resolver",
            server.address,
        ]
        report = run_cli(*args, "--json").json
        ru_out = norm(checks_section(run_cli(*args, "--lang", "ru").out))
        en_out = norm(checks_section(run_cli(*args, "--lang", "en").out))
    dns = next(c for c in report["checks"] if c["id"] == "dns")
    assert ru in ru_out, ru_out
    assert dns["summary"] in en_out, en_out
