"""The text report a person reads at a glance: real runs against loopback peers (tests/scenes.py).

A healthy run ends with one line that says so and keeps its notes brief; lines are wrapped to the
terminal with hanging indents and carry no trailing blanks; internal ids appear only with
--verbose; what a failure makes impossible is one line per server; identical advice is shown once
with every place it applies to; every line is in the chosen language; a console without ✔ ✖
gets words; a --config run ends with one line per target.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from peers import free_port
from scenes import ALICE, ENV, servers

from maildiag.models import MultiReport
from maildiag.options import CHECK, check_config
from maildiag.pipeline import check_mailbox
from maildiag.report.text import Writer, render_text
from maildiag.rulebase import RuleBase


@pytest.fixture
def scene(
    smtp_peers: Callable[..., Any],
    imap_server: Callable[..., Any],
    pop3_server: Callable[..., Any],
    certs: Any,
) -> tuple[list[str], list[str]]:
    return servers(smtp_peers, imap_server, pop3_server, certs)


def run(args: list[str], *extra: str, columns: int | None = None) -> Any:
    env = dict(ENV)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return run_cli(*args, *extra, env=env)


# -- the verdict ------------------------------------------------------------------------------


def test_a_healthy_run_ends_with_one_line_and_keeps_its_notes_brief(
    scene: tuple[list[str], list[str]],
) -> None:
    healthy, _ = scene
    result = run(healthy, columns=100)
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"✔ {ALICE}: all fine (took ")
    assert lines[-1] == "Everything checked is fine."
    assert "What is wrong and what to do" not in result.out
    after = lines[lines.index("Notes") + 1 :]
    notes = after[: after.index("")]
    # the note is its title and where, no steps
    assert len(notes) <= 2 and notes[0].startswith("  • The server accepts mail only after SMTP")
    assert not any(re.match(r"\s*\d\) ", line) for line in lines)

    verbose = run(healthy, "--verbose", columns=100)
    assert verbose.code == 0
    assert re.search(r"^\s+1\) ", verbose.out, re.M), verbose.out  # the note's steps
    assert "category auth_required" in verbose.out and "smtp.auth" in verbose.out


def test_a_failing_run_says_how_many_problems_first(scene: tuple[list[str], list[str]]) -> None:
    _, failing = scene
    result = run(failing, columns=100)
    assert result.code == 2
    assert result.out.splitlines()[0].startswith(f"✖ {ALICE}: 2 problems (took ")
    titles = [line for line in result.out.splitlines() if re.match(r"\d\. ✖ ", line)]
    assert len(titles) == 2, result.out
    assert "Everything checked is fine." not in result.out
    ru = run(failing, "--lang", "ru", columns=100)
    assert ru.out.splitlines()[0].startswith(f"✖ {ALICE}: 2 проблемы (заняло ")


# -- layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_wrapped_to_the_width_with_hanging_indents(
    scene: tuple[list[str], list[str]], columns: int, lang: str
) -> None:
    _, failing = scene
    out = run(failing, "--lang", lang, columns=columns).out
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines)
    wrapped = 0
    for before, line in zip(lines, lines[1:], strict=False):
        step = re.match(r"^(\s+)\d+\) ", before)
        indent = len(line) - len(line.lstrip())
        if step and line and indent > len(step.group(1)):
            # a step's next line starts under the step's text, not at column 0
            assert indent == len(step.group(1)) + 3, (before, line)
            wrapped += 1
        row = re.match(r"^(  [✔✖!–] \S+\s+)\S", before)
        if row and line.startswith(" ") and not re.match(r"^  [✔✖!–] ", line):
            assert line.startswith(" " * len(row.group(1))), (before, line)
            assert line[len(row.group(1))] != " "
            wrapped += 1
    assert wrapped >= 2, out  # 80 and 120 columns both wrap something here


def test_piped_output_is_whole_lines_without_trailing_blanks(
    scene: tuple[list[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, failing = scene
    monkeypatch.delenv("COLUMNS", raising=False)
    out = run(failing).out
    assert "refused at MAIL: 553 5.7.1 Sender address rejected: not owned by auth user." in out
    assert all(line == line.rstrip() for line in out.splitlines())
    assert "\x1b[" not in out  # no colours in a pipe
    assert not out.endswith("\n\n")


def test_internal_ids_only_with_verbose(scene: tuple[list[str], list[str]]) -> None:
    _, failing = scene
    report = run(failing, "--json").json
    ids = {c["id"] for c in report["checks"]} | {f["rule"] for f in report["findings"]}
    ids |= {f["category"] for f in report["findings"]}
    ids -= {"dns", "clock"}  # also the names the report gives these checks
    plain = run(failing, columns=200).out
    assert not [i for i in ids if re.search(rf"(?<![\w.-]){re.escape(i)}(?![\w.-])", plain)]
    verbose = run(failing, "--verbose", columns=200).out
    assert all(i in verbose for i in ids), sorted(i for i in ids if i not in verbose)


# -- collapsing and merging ---------------------------------------------------------------------


def test_checks_a_failure_makes_impossible_are_one_line_per_server() -> None:
    smtp, imap = free_port(), free_port()
    args = [
        "check",
        ALICE,
        "--smtp",
        f"127.0.0.1:{smtp}/ssl",
        "--imap",
        f"127.0.0.1:{imap}/ssl",
        "--no-clock",
    ]
    en = run(args, columns=120).out
    assert f"  – 5 checks not run: 127.0.0.1:{smtp} is not reachable" in en.splitlines()
    assert f"  – 4 checks not run: 127.0.0.1:{imap} is not reachable" in en.splitlines()
    assert en.count("is not reachable") == 2
    ru = run(args, "--lang", "ru", columns=120).out
    assert f"  – 5 проверок не выполнялось: 127.0.0.1:{smtp} недоступен" in ru.splitlines()
    assert f"  – 4 проверки не выполнялись: 127.0.0.1:{imap} недоступен" in ru.splitlines()
    verbose = run(args, "--verbose", columns=120).out
    assert verbose.count("is not reachable") == 9  # every check, with its id


def test_identical_findings_are_shown_once_with_every_place(
    imap_server: Callable[..., Any], pop3_server: Callable[..., Any], certs: Any
) -> None:
    users = {ALICE: "another password"}
    imap = imap_server(implicit_tls=True, users=users)
    pop3 = pop3_server(implicit_tls=True, users=users)
    args = ["check", ALICE, "--no-clock", "--ca-file", str(certs.ca_pem)]
    args += ["--imap", f"127.0.0.1:{imap.port}/ssl", "--pop3", f"127.0.0.1:{pop3.port}/ssl"]
    args += ["--password-env", "MAILDIAG_TEST_PASSWORD"]
    report = run(args, "--json").json
    refused = [f for f in report["findings"] if f["category"] == "auth_failed"]
    assert len(refused) == 2 and refused[0]["rule"] == refused[1]["rule"]  # one per check
    out = run(args, columns=200).out
    titles = [line for line in out.splitlines() if re.match(r"\d+\. ", line)]
    assert len(titles) == 1, out
    where = next(line for line in out.splitlines() if line.strip().startswith("Where: "))
    assert f"IMAP 127.0.0.1:{imap.port}, login; POP3 127.0.0.1:{pop3.port}, login" in where
    assert out.splitlines()[0].startswith(f"✖ {ALICE}: 1 problem (")
    assert out.count("Seen: ") == 2  # each server's own words


# -- the language --------------------------------------------------------------------------------

# the report's own English words; what servers said stays as it is
ENGLISH_LABELS = re.compile(
    r"Checks|What is wrong|Where:|Seen:|Notes|problems?\b|exit code|\btook\b|\bconnect\b|"
    r"\bgreeting\b|\bcapabilities\b|\blogin\b|\bsender\b|\bFAIL\b|\bWARN\b|\bINFO\b|servers found"
)


def test_every_line_is_in_the_chosen_language(scene: tuple[list[str], list[str]]) -> None:
    healthy, failing = scene
    for args in (healthy, failing):
        out = run(args, "--lang", "ru", "--transcript", columns=100).out
        ours = []
        for line in out.splitlines():
            # a server's reply and the dialogue are evidence: quoted, not translated
            line = re.sub(r"(Что видно: |\s{4}[CS]: ).*", "", line)
            line = re.sub(r"(\d{3}[ -]|[+-]OK|-ERR|\* OK).*", "", line)
            ours.append(line)
        english = sorted({m.group(0) for m in ENGLISH_LABELS.finditer("\n".join(ours))})
        assert not english, f"English left: {english}\n{out}"
    assert "Для сведения" in run(healthy, "--lang", "ru").out


class _Console(io.TextIOWrapper):
    """A console in a legacy code page (cp866: Cyrillic, but no ✔ ✖)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(io.BytesIO(), encoding=encoding, errors="maildiag-plain")

    def text(self) -> str:
        self.flush()
        buffer = self.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue().decode(self.encoding)


@pytest.mark.parametrize(
    ("encoding", "lang", "fail", "ok"),
    [
        ("cp866", "ru", "ОШИБКА", "ОК"),
        ("cp1251", "ru", "ОШИБКА", "ОК"),
        ("ascii", "en", "FAIL", "OK"),
    ],
)
def test_a_console_without_the_marks_gets_words(
    scene: tuple[list[str], list[str]], encoding: str, lang: str, fail: str, ok: str
) -> None:
    _, failing = scene
    rules = RuleBase.load()
    values = CHECK.checked(_values(failing[1:]))
    config = check_config({**values, "lang": lang}, password=ENV["MAILDIAG_TEST_PASSWORD"])
    console = _Console(encoding)
    render_text(check_mailbox(config, rules=rules), lang=lang, rules=rules, out=console, width=100)
    text = console.text()
    assert re.search(rf"^  {fail}\s+\S", text, re.M), text
    assert re.search(rf"^  {ok}\s+\S", text, re.M), text
    assert "✔" not in text and "✖" not in text
    if lang == "ru":
        assert "Что не так и что делать" in text  # the language the console carries stays


def _values(argv: list[str]) -> dict[str, Any]:
    from maildiag.cli import parse

    _, values = parse(["check", *argv])
    return values


# -- a --config run ------------------------------------------------------------------------------


def test_a_config_run_ends_with_one_line_per_target_named(
    tmp_path: Path, smtp_server: Callable[..., Any], certs: Any
) -> None:
    smtp = smtp_server("ssl")
    closed = free_port()
    config = tmp_path / "targets.yaml"
    config.write_text(
        textwrap.dedent(f"""
        defaults: {{timeout: 3, clock: false, only: smtp, ca_file: {certs.ca_pem}}}
        targets:
          - address: {ALICE}
            name: alice-main
            smtp: 127.0.0.1:{smtp.port}/ssl
          - address: {ALICE}
            name: alice-backup
            smtp: 127.0.0.1:{closed}/ssl
        """),
        encoding="utf-8",
    )
    result = run_cli("check", "--config", str(config), env={"COLUMNS": "100"})
    assert result.code == 2, result.err
    lines = result.out.splitlines()
    summary = lines[lines.index("Summary: 2 targets, with problems: 1") + 1 :]
    assert summary[0] == "  ✔ alice-main: all fine"
    assert summary[1].startswith("  ✖ alice-backup: 1 problem: ")
    assert len(summary) == 2
    assert f"✖ alice-backup ({ALICE}): 1 problem" in result.out
    ru = run_cli("check", "--config", str(config), "--lang", "ru").out
    assert "Итог: 2 цели, с проблемами: 1" in ru and "  ✔ alice-main: всё в порядке" in ru

    multi = run_cli("check", "--config", str(config), "--json").json
    assert multi["schema"] == "maildiag.multi/1"
    assert [r["name"] for r in multi["reports"]] == ["alice-main", "alice-backup"]
    assert [r["address"] for r in multi["reports"]] == [ALICE, ALICE]
    nagios = run_cli("check", "--config", str(config), "--format", "nagios").out
    assert "alice-backup:" in nagios.splitlines()[0]
    assert f"alice-backup 127.0.0.1:{closed}" in nagios
    junit = run_cli("check", "--config", str(config), "--format", "junit").out
    assert 'name="alice-main"' in junit and 'name="alice-backup smtp://' in junit
    prometheus = run_cli("check", "--config", str(config), "--format", "prometheus").out
    assert 'maildiag_run_status{address="alice@example.test",name="alice-backup",' in prometheus


# -- the writer ------------------------------------------------------------------------------------


def test_writer_wraps_with_hanging_indent_and_never_leaves_trailing_blanks() -> None:
    out = io.StringIO()
    writer = Writer(out, 40, color=False)
    writer.para("one two three four five six seven eight nine ten", "  ✖ name  ")
    writer.blank()
    writer.blank()
    writer.para("x" * 50, "    ")
    writer.blank()
    writer.flush()
    assert out.getvalue() == (
        "  ✖ name  one two three four five six\n"
        "          seven eight nine ten\n"
        "\n"
        f"    {'x' * 36}\n"
        f"    {'x' * 14}\n"
    )
    narrow = io.StringIO()
    writer = Writer(narrow, 30, color=False)  # too little room after the indent: indent less
    writer.para("one two three four five six seven", "  ✖ a-long-check-name  ")
    writer.flush()
    assert all(len(line) <= 30 for line in narrow.getvalue().splitlines())
    colored = io.StringIO()
    writer = Writer(colored, None, color=True)
    writer.para("\x1b]0;title\x07 text", "  ✖ ", mark=("✖", "31"))
    writer.flush()
    # our colour around the mark; the server's escape shown, not obeyed
    assert colored.getvalue() == "  \x1b[31m✖\x1b[0m \\x1b]0;title\\x07 text\n"


def test_render_text_of_a_multi_report_from_fixtures() -> None:
    from test_multi_fixtures import ok_report, sample_report

    out = io.StringIO()
    multi = MultiReport.of([ok_report(), sample_report()])
    render_text(multi, rules=RuleBase.load(), out=out, width=None)
    last = out.getvalue().splitlines()[-3:]
    assert last[0] == "Summary: 2 targets, with problems: 1"
    assert last[1].startswith("  ✔ ") and last[2].startswith("  ✖ ")


def test_settings_that_work_are_shown_when_the_report_has_them() -> None:
    import dataclasses

    from test_multi_fixtures import ok_report

    from maildiag.models import Recommended, Security, Service, Source, Target

    servers = (
        Target(Service.SMTP, "smtp.example.test", 465, Security.SSL, Source.PROVIDER),
        Target(Service.IMAP, "::1", 993, Security.SSL, Source.PROVIDER),
        Target(Service.POP3, "pop.example.test", 995, Security.SSL, Source.PROVIDER),
    )
    recommended = (
        Recommended(Service.SMTP, "smtp.example.test", 465, Security.SSL, "alice@example.test"),
        Recommended(Service.IMAP, "::1", 993, Security.SSL, None),
    )
    report = dataclasses.replace(ok_report(), servers=servers, recommended=recommended)
    out = io.StringIO()
    render_text(report, rules=RuleBase.load(), out=out, width=None)
    lines = out.getvalue().splitlines()
    at = lines.index("Settings that work")
    assert lines[at + 1 : at + 4] == [
        "  SMTP  smtp.example.test:465 SSL/TLS Login: alice@example.test",
        "  IMAP  [::1]:993 SSL/TLS",
        "  POP3  ✖ nothing that works was found",
    ]
    assert lines[-1] == "Everything checked is fine."
    from maildiag.report.html import render_html

    page = render_html(report, rules=RuleBase.load(), lang="ru")
    assert "Работающие настройки" in page and "smtp.example.test" in page
