"""The text report in the user's language: check summaries and headings from rules/ui-report.yaml.

Probes keep an English ``summary`` (JSON is unchanged) and add ``summary_key`` with the facts;
the text report renders ``summary.<key>`` in the report's language. These tests run loopback peers
through the common paths, check the Russian table has no English summary left, that every key the
code uses has both translations (and no template is dead), and that the English templates say
exactly what the English summaries say.
"""

from __future__ import annotations

import ast
import re
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli
from peers import Certs, LineServer, PeerConn

from maildiag.address import parse_address
from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.probes.auth import make_login_stage
from maildiag.probes.clock import ClockReading, judge_clock
from maildiag.probes.session import Env, Session
from maildiag.report.text import UiText, plural_form
from maildiag.rulebase import RuleBase
from maildiag.runner import Job, run_jobs

SRC = ROOT / "src" / "maildiag"
SUMMARY_SOURCES = [
    SRC / p
    for p in (
        "probes/session.py",
        "probes/auth.py",
        "probes/tls.py",
        "probes/clock.py",
        "runner.py",
        "discovery/__init__.py",
    )
]
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
def ui() -> UiText:
    return UiText(RuleBase.load(cache=False))


def norm(text: str) -> str:
    return " ".join(text.split())


def summaries_only(table: str) -> str:
    """The table without check ids and command-line options (they are names, not words)."""
    table = re.sub(r"\b(?:smtp|imap|pop3)\.[a-z]+\b", " ", table)
    return re.sub(r"--[a-z][a-z-]*", " ", table)


def checks_section(out: str) -> str:
    """The lines of the checks table (between the heading and the next blank line)."""
    lines = out.splitlines()
    start = lines.index("Проверки") if "Проверки" in lines else lines.index("Checks")
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
    assert "проверка часов отключена (--no-clock)" in flat
    assert "серверы указаны в команде: в DNS найдены 3 из 3 серверов" in flat
    # the server's own words stay as they are
    assert "* OK [CAPABILITY IMAP4rev1] test IMAP ready" in flat
    # the headings come from the same table
    assert "Серверы — источник: указаны в команде" in ru.out
    assert "Что не так и что делать" in ru.out and "(заняло " in ru.out

    en = cli(*args, "--lang", "en")
    flat_en = norm(checks_section(en.out))
    assert f"connected to 127.0.0.1:{smtp.port}" in flat_en
    assert "needs a password (--password-env or --ask-password)" in flat_en
    assert f"127.0.0.1:{closed_port} is not reachable" in flat_en
    assert "explicit servers: 3 of 3 server names resolve" in flat_en
    assert "Servers found via: explicit" in en.out and "What is wrong and what to do" in en.out


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


# -- every key the code uses has en and ru; no template is dead ----------------------------------

_KEY_NAMES = {"key", "summary_key"}


def _strings(node: ast.AST) -> Iterator[str]:
    """String constants in an expression; of a dict literal, only its values."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from _strings(value)
    elif isinstance(node, (ast.JoinedStr, ast.Subscript, ast.Lambda)):
        return  # built at run time, a lookup (nested["key"]), or a sort key: no literal key
    else:
        for child in ast.iter_child_nodes(node):
            yield from _strings(child)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def summary_keys_in(source: str) -> set[str]:
    """Summary keys a module passes: key=/summary_key= arguments, {"key": ...} params, the
    first argument of skip()/skip_once(), the second of fact()/skip_all(), Observation's ninth
    positional argument, and names or tables assigned to key/summary_key/*_KEYS."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg in _KEY_NAMES:
            keys.update(_strings(node.value))
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "key":
                    keys.update(_strings(v))
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in ("skip", "skip_once") and node.args:
                keys.update(_strings(node.args[0]))
            elif name in ("fact", "skip_all") and len(node.args) > 1:
                keys.update(_strings(node.args[1]))
            elif name == "Observation" and len(node.args) > 8:
                keys.update(_strings(node.args[8]))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and (
                    target.id in _KEY_NAMES or target.id.endswith("_KEYS")
                ):
                    keys.update(_strings(node.value))
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for t, v in zip(target.elts, node.value.elts, strict=False):
                        if isinstance(t, ast.Name) and t.id in _KEY_NAMES:
                            keys.update(_strings(v))
    return keys


def test_every_summary_key_has_english_and_russian_and_none_is_dead() -> None:
    rules = RuleBase.load(cache=False)
    used: set[str] = set()
    for path in SUMMARY_SOURCES:
        found = summary_keys_in(path.read_text(encoding="utf-8"))
        assert found, f"{path}: no summary keys found"
        used |= found
    assert len(used) >= 80, sorted(used)
    missing = sorted(k for k in used if f"summary.{k}" not in rules.ui)
    assert not missing, f"summary keys without a template in rules/ui-report.yaml: {missing}"
    for key in used:
        entry = rules.ui[f"summary.{key}"]
        assert entry["en"].strip() and entry["ru"].strip(), key
    defined = {k.removeprefix("summary.") for k in rules.ui if k.startswith("summary.")}
    assert not sorted(defined - used), f"templates no code uses: {sorted(defined - used)}"


def test_the_key_scanner_sees_a_missing_key() -> None:
    found = summary_keys_in(
        'self.emit("auth", Status.OK, "x", key="auth.brand_new")\n'
        'self.session.skip("skip.also_new", "y")\n'
    )
    assert found == {"auth.brand_new", "skip.also_new"}


def test_report_headings_live_in_the_rule_base() -> None:
    import maildiag.report.text as text

    assert not hasattr(text, "LABELS")
    rules = RuleBase.load(cache=False)
    for name in (
        "servers",
        "checks",
        "findings",
        "source",
        "none",
        "evidence",
        "ok",
        "took",
        "exit",
        "checking",
        "done",
    ):
        assert f"report.{name}" in rules.ui, name


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
def test_certificate_days_read_naturally(ui: UiText, days: int, word: str) -> None:
    obs = Observation(
        "smtp.tls",
        Status.OK,
        f"TLSv1.3, certificate valid for {days} days",
        summary_key="tls.ok",
        summary_params={"version": "TLSv1.3", "days": days},
    )
    assert ui.summary(obs, "ru") == f"TLSv1.3, сертификат действителен ещё {word}"
    assert ui.summary(obs, "en") == obs.summary


def test_server_words_are_quoted_verbatim(ui: UiText) -> None:
    reply = "554  5.7.1 Go away . {port} [[x]] \x001\x00"
    obs = Observation(
        "smtp.greeting",
        Status.FAIL,
        reply,
        summary_key="greeting.rejected",
        summary_params={"reply": reply},
    )
    assert ui.summary(obs, "en") == reply
    assert ui.summary(obs, "ru") == f"сервер отказал в сеансе: {reply}"


def test_without_a_key_or_template_the_english_summary_is_shown(ui: UiText) -> None:
    assert ui.summary(Observation("x", Status.OK, "plain words"), "ru") == "plain words"
    unknown = Observation("x", Status.OK, "plain words", summary_key="no.such.key")
    assert ui.summary(unknown, "ru") == "plain words"


def test_clock_summaries_in_russian(ui: UiText) -> None:
    import datetime as dt

    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for offset, ru in [
        (0.3, "часы компьютера расходятся с sntp:ntp.test:123 не больше чем на 0.3 с"),
        (3 * 3600, "часы компьютера спешат на 3 часа относительно sntp:ntp.test:123"),
        (-86400 * 2, "часы компьютера отстают на 2 дня от sntp:ntp.test:123"),
    ]:
        reading = ClockReading(
            offset=offset,
            source="sntp:ntp.test:123",
            reference=now,
            local=now + dt.timedelta(seconds=offset),
            detail={},
        )
        obs = judge_clock(reading)
        assert ui.summary(obs, "ru") == ru
        assert ui.summary(obs, "en") == obs.summary


# -- the English templates say what the English summaries say, on every path we can reach --------


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
    Session(target, Env(config, seen.append, login_stage=stage)).run()
    return seen


def _t(service: Service, port: int, security: str) -> Target:
    return Target(service, "127.0.0.1", port, Security(security))


def test_every_path_has_a_key_and_english_renders_as_the_summary(
    smtp_server: Callable[..., Any],
    smtp_peers: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    pop3_server: Callable[..., LineServer],
    line_server: Callable[..., LineServer],
    certs: Certs,
    closed_port: int,
    ui: UiText,
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
    observations += run_jobs(
        [
            Job("crash", ("clock",), crash),
            Job("stuck", ("smtp.connect", "smtp.greeting"), stuck, host="h", target=t),
        ],
        deadline=0.3,
    )

    used: set[str] = set()
    for obs in observations:
        assert obs.summary_key, f"{obs.check}: no summary key for {obs.summary!r}"
        assert ui.has(f"summary.{obs.summary_key}"), obs.summary_key
        used.add(obs.summary_key)
        assert ui.summary(obs, "en") == norm(obs.summary), (obs.check, obs.summary_key)
        ru = ui.summary(obs, "ru")
        assert ru and "?" not in ru.replace(obs.summary, ""), (obs.summary_key, ru)
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


def test_dns_facts_render_in_russian(ui: UiText) -> None:
    obs = Observation(
        "dns",
        Status.FAIL,
        "example.test: resolver 127.0.0.1:53 did not answer; MX a.test, "
        "b.test, c.test ...; 1 of 3 server names resolve",
        summary_key="dns.domain",
        summary_params={
            "domain": "example.test",
            "facts": [
                {"key": "dns.resolver_silent", "params": {"resolver": "127.0.0.1:53"}},
                {"key": "dns.mx", "params": {"hosts": "a.test, b.test, c.test ..."}},
                {"key": "dns.resolved", "params": {"resolved": 1, "servers": 3}},
            ],
        },
    )
    assert ui.summary(obs, "en") == obs.summary
    assert ui.summary(obs, "ru") == (
        "example.test: DNS-сервер 127.0.0.1:53 не ответил; "
        "MX: a.test, b.test, c.test ...; в DNS найдены 1 из 3 "
        "серверов"
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
