"""JUnit XML: parsed back and checked for the counts and content CI systems display."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from test_multi_fixtures import (
    AUTH_FAILED,
    CERT_SOON,
    check,
    finding,
    ok_report,
    report,
    sample_report,
    target,
)

from maildiag.models import MultiReport, Report
from maildiag.report.junit import render_junit as _render_junit
from maildiag.rulebase import RuleBase

SUITE_ATTRS = {"name", "tests", "failures", "errors", "skipped", "time"}


RULES = RuleBase.load()


def render_junit(report: Report | MultiReport, lang: str = "en") -> str:
    return _render_junit(report, rules=RULES, lang=lang)


def parse(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(xml.encode("utf-8"))


def case_by_check(root: ET.Element, check_id: str) -> ET.Element:
    cases = [c for c in root.iter("testcase") if c.get("name", "").split()[0] == check_id]
    assert len(cases) == 1, [c.get("name") for c in cases]
    return cases[0]


def test_counts_add_up_per_suite_and_in_total() -> None:
    root = parse(render_junit(sample_report()))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "9",
        "2",
        "0",
        "1",
    )
    assert root.get("time") == "0.420"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "alice@example.test",
        "alice@example.test smtp://smtp.example.test:465/ssl",
        "alice@example.test imap://imap.example.test:993/ssl",
    ]
    for suite in suites:
        assert set(suite.attrib) >= SUITE_ATTRS
        cases = suite.findall("testcase")
        failed = sum(1 for c in cases if c.find("failure") is not None)
        skipped = sum(1 for c in cases if c.find("skipped") is not None)
        assert int(suite.get("tests", "")) == len(cases)
        assert int(suite.get("failures", "")) == failed
        assert int(suite.get("skipped", "")) == skipped
        assert suite.get("errors") == "0"
        case_time = sum(float(c.get("time", "")) for c in cases)
        assert abs(float(suite.get("time", "")) - case_time) < 1e-6
        # properties come first, as the schema orders them
        assert suite[0].tag == "properties"
        for case in cases:
            assert {"classname", "name", "time"} <= set(case.attrib)
    assert sum(int(s.get("tests", "")) for s in suites) == 9


def test_failure_carries_title_steps_evidence_and_category() -> None:
    root = parse(render_junit(sample_report()))
    case = case_by_check(root, "smtp.auth")
    assert case.get("classname") == "maildiag.smtp"
    assert case.get("name") == "smtp.auth alice@example.test smtp.example.test:465"
    assert case.get("time") == "0.120"
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "auth_failed"
    assert failure.get("message") == AUTH_FAILED.title
    body = failure.text or ""
    assert "1. Check the login name." in body
    assert "2. Create an app password and use it." in body
    assert "evidence: 535 5.7.8 Error: authentication failed" in body


def test_warning_is_a_failure_of_type_warning() -> None:
    root = parse(render_junit(sample_report()))
    failure = case_by_check(root, "imap.tls").find("failure")
    assert failure is not None
    assert failure.get("type") == "warning"
    assert failure.get("message") == CERT_SOON.title
    assert "1. Renew the certificate." in (failure.text or "")


def test_skip_ok_and_info() -> None:
    root = parse(render_junit(sample_report()))
    skipped = case_by_check(root, "imap.auth").find("skipped")
    assert skipped is not None and skipped.get("message") == "no password given"
    ok = case_by_check(root, "smtp.tls")
    assert ok.find("failure") is None and ok.find("skipped") is None
    assert case_by_check(root, "dns").get("classname") == "maildiag.run"
    # an info finding is advice, not a failure: it goes to system-out
    caps = case_by_check(root, "smtp.capabilities")
    assert caps.find("failure") is None
    assert "This server requires SMTP authentication" in (caps.findtext("system-out") or "")


def test_all_ok_report_has_no_failures() -> None:
    root = parse(render_junit(ok_report()))
    assert root.get("failures") == "0"
    assert root.get("skipped") == "1"
    assert root.get("tests") == "4"


def test_hostile_text_stays_well_formed_xml() -> None:
    smtp = target()
    nasty = finding(
        'Refused <&> "quoted"',
        evidence="550 \x00\x07 bad\x1b[31m ]]> \ud800 end",
    )
    rep = report(
        "eve@example.test",
        [check("smtp.auth", "fail", smtp, "summary with \x0c form feed", findings=(nasty,))],
    )
    root = parse(render_junit(rep))
    failure = root.find(".//failure")
    assert failure is not None
    assert failure.get("message") == 'Refused <&> "quoted"'
    text = failure.text or ""
    assert "\\x00\\x07 bad\\x1b[31m ]]>" in text
    assert "\\xd800" in text


def test_transcript_only_when_asked() -> None:
    smtp = target()
    lines = ("S: 220 hello", "C: AUTH PLAIN ********")
    plain = report("a@example.test", [check("smtp.auth", "ok", smtp, transcript=lines)])
    assert "AUTH PLAIN" not in render_junit(plain)
    shown = report(
        "a@example.test", [check("smtp.auth", "ok", smtp, transcript=lines)], transcript=True
    )
    out = parse(render_junit(shown)).findtext(".//system-out") or ""
    assert "C: AUTH PLAIN ********" in out


def test_multi_report_puts_every_suite_in_one_testsuites() -> None:
    multi = MultiReport.of([sample_report(), ok_report()], duration_ms=1500)
    root = parse(render_junit(multi))
    assert root.get("tests") == "13"
    assert root.get("failures") == "2"
    assert root.get("skipped") == "2"
    assert root.get("time") == "1.500"
    names = [s.get("name") for s in root.findall("testsuite")]
    assert "bob@example.test smtp://smtp.example.org:465/ssl" in names
    assert len(names) == len(set(names)) == 5
    # classname + name identify a test case uniquely across targets
    ids = [(c.get("classname"), c.get("name")) for c in root.iter("testcase")]
    assert len(ids) == len(set(ids))


def test_report_without_checks_still_valid() -> None:
    rep = report("nobody@example.test", [])
    root = parse(render_junit(rep))
    assert root.get("tests") == "0"
    assert [s.get("name") for s in root.findall("testsuite")] == ["nobody@example.test"]


def test_ipv6_host_is_bracketed_in_case_name() -> None:
    rep = report("a@example.test", [check("smtp.connect", "ok", target(host="::1", port=2525))])
    case = parse(render_junit(rep)).find(".//testcase")
    assert case is not None and case.get("name") == "smtp.connect a@example.test [::1]:2525"
