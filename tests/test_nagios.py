"""Nagios plugin output checked against the Monitoring Plugins guidelines' grammar."""

from __future__ import annotations

import re

import pytest
from test_multi_fixtures import check, finding, ok_report, report, sample_report, target

from maildiag.errors import ExitCode
from maildiag.models import MultiReport, Report
from maildiag.report.nagios import perf_label, render_nagios_error
from maildiag.report.nagios import render_nagios as _render_nagios
from maildiag.rulebase import RuleBase

NUM = r"-?\d+(?:\.\d+)?"
RANGE = rf"(?:@?(?:{NUM}|~)?:?(?:{NUM})?)"
UOM = r"(?:s|ms|us|%|B|KB|MB|TB|c)?"
LABEL = r"(?:'(?:[^']|'')+'|[^'= ]+)"
PERF = rf"{LABEL}={NUM}{UOM}(?:;{RANGE}?){{0,4}}"
STATUS_LINE = re.compile(
    rf"^MAILDIAG (?P<state>OK|WARNING|CRITICAL|UNKNOWN) - (?P<text>[^|\n]+?) "
    rf"\| (?P<perf>{PERF}(?: {PERF})*)$"
)
STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


RULES = RuleBase.load()


def render_nagios(report: Report | MultiReport, lang: str = "en") -> str:
    return _render_nagios(report, rules=RULES, lang=lang)


def split(output: str) -> tuple[re.Match[str], list[str]]:
    assert output.endswith("\n")
    first, *rest = output.rstrip("\n").split("\n")
    match = STATUS_LINE.match(first)
    assert match, first
    for line in rest:  # long output never carries a pipe (it would start perfdata)
        assert "|" not in line
    return match, rest


def perf_items(match: re.Match[str]) -> dict[str, str]:
    items = re.findall(rf"({LABEL})=({NUM}{UOM}(?:;{RANGE}?){{0,4}})", match.group("perf"))
    return dict(items)


def test_failing_run_is_critical_with_titles_and_perfdata() -> None:
    rep = sample_report()
    match, long_output = split(render_nagios(rep))
    assert match.group("state") == STATES[rep.exit_code] == "CRITICAL"
    assert match.group("text") == (
        "2 problems: The server refused the login and password; The server certificate expires soon"
    )
    perf = perf_items(match)
    assert perf == {
        "time": "0.42s;;",
        "days_to_expiry_smtp": "80;21:;7:",
        "days_to_expiry_imap": "10;21:;7:",
        "clock_offset": "0.31s;;",
    }
    assert long_output == [
        "[FAIL] smtp.auth alice@example.test smtp.example.test:465: "
        "The server refused the login and password (535 5.7.8 Error: authentication failed)",
        "[WARN] imap.tls alice@example.test imap.example.test:993: "
        "The server certificate expires soon (notAfter 2030-01-11)",
        "[SKIP] imap.auth alice@example.test imap.example.test:993: no password given",
    ]


def test_ok_run() -> None:
    rep = ok_report()
    match, long_output = split(render_nagios(rep))
    assert rep.exit_code == ExitCode.OK
    assert match.group("state") == "OK"
    assert match.group("text") == "bob@example.test: 3 checks ok, 1 skipped"
    assert perf_items(match)["days_to_expiry_smtp"] == "200;21:;7:"
    assert long_output == [
        "[SKIP] smtp.auth bob@example.test smtp.example.org:465: no password given"
    ]


def test_warning_only_and_fail_on_warn() -> None:
    imap = target("imap", "imap.example.test", 993)
    warn = finding("Certificate expires soon", severity="warn", category="cert_expired")
    checks = [
        check("imap.tls", "warn", imap, "10 days", data={"days_to_expiry": 10}, findings=(warn,))
    ]
    match, _ = split(render_nagios(report("a@example.test", checks)))
    assert match.group("state") == "WARNING"
    assert match.group("text") == "1 problem: Certificate expires soon"
    # --fail-on warn: the exit code is 2, and the state word follows it
    promoted = report("a@example.test", checks, fail_on="warn")
    assert promoted.exit_code == ExitCode.FAIL
    match, _ = split(render_nagios(promoted))
    assert match.group("state") == "CRITICAL"


def test_pipes_and_newlines_in_server_text_cannot_break_the_format() -> None:
    smtp = target()
    evil = finding("Rejected | by policy\nsecond line", evidence="550 a|b\r\nX-Injected: yes")
    rep = report("a@example.test", [check("smtp.auth", "fail", smtp, "x", findings=(evil,))])
    match, long_output = split(render_nagios(rep))
    assert match.group("text") == "1 problem: Rejected / by policy second line"
    assert long_output == [
        "[FAIL] smtp.auth a@example.test smtp.example.test:465: "
        "Rejected / by policy second line (550 a/b X-Injected: yes)"
    ]


def test_fail_without_finding_names_the_check() -> None:
    smtp = target()
    rep = report("a@example.test", [check("smtp.connect", "fail", smtp, "connection refused")])
    match, _ = split(render_nagios(rep))
    assert match.group("text") == "1 problem: smtp.connect: connection refused"


def test_multi_target_line_summarises_all_with_prefixed_quoted_labels() -> None:
    multi = MultiReport.of([sample_report(), ok_report()], duration_ms=1234)
    match, long_output = split(render_nagios(multi))
    assert match.group("state") == "CRITICAL"
    assert match.group("text").startswith("2 problems in 1 of 2 targets: alice@example.test: ")
    perf = perf_items(match)
    assert perf["time"] == "1.234s;;"
    assert perf["'alice@example.test days_to_expiry_smtp'"] == "80;21:;7:"
    assert perf["'bob@example.test days_to_expiry_smtp'"] == "200;21:;7:"
    assert len(long_output) == 4
    # problems first across targets, even when the failing target comes second in the file
    _, reordered = split(render_nagios(MultiReport.of([ok_report(), sample_report()])))
    assert [line.split()[0] for line in reordered] == ["[FAIL]", "[WARN]", "[SKIP]", "[SKIP]"]
    assert reordered[0].startswith("[FAIL] smtp.auth alice@example.test ")
    ok_multi = MultiReport.of([ok_report(), ok_report("carol@example.test")])
    match, _ = split(render_nagios(ok_multi))
    assert match.group("state") == "OK"
    assert match.group("text") == "2 targets: 6 checks ok, 2 skipped"


def test_two_servers_of_one_service_get_distinct_labels() -> None:
    a, b = target(host="mx1.example.test"), target(host="mx2.example.test")
    rep = report(
        "a@example.test",
        [
            check("smtp.tls", tgt=a, data={"days_to_expiry": 30}),
            check("smtp.tls", tgt=b, data={"days_to_expiry": 40}),
        ],
    )
    perf = perf_items(split(render_nagios(rep))[0])
    assert perf["days_to_expiry_smtp_mx1.example.test:465"] == "30;21:;7:"
    assert perf["days_to_expiry_smtp_mx2.example.test:465"] == "40;21:;7:"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("time", "time"),
        ("a b", "'a b'"),
        ("a=b", "'a=b'"),
        ("it's", "'it''s'"),
        ("x|y", "x/y"),
    ],
)
def test_perf_label_quoting(label: str, expected: str) -> None:
    assert perf_label(label) == expected
    assert re.fullmatch(LABEL, perf_label(label))


def test_error_line_is_unknown() -> None:
    out = render_nagios_error("targets.yaml:3: unknown key 'x' | oops")
    assert out == "MAILDIAG UNKNOWN - targets.yaml:3: unknown key 'x' / oops\n"


def test_evidence_already_in_the_title_is_not_repeated() -> None:
    smtp = target()
    quoted = finding("Unrecognised reply: 250-a 250 HELP", evidence="250-a\n250 HELP")
    rep = report("a@example.test", [check("smtp.tls", "fail", smtp, "x", findings=(quoted,))])
    _, long_output = split(render_nagios(rep))
    assert long_output == [
        "[FAIL] smtp.tls a@example.test smtp.example.test:465: Unrecognised reply: 250-a 250 HELP"
    ]
