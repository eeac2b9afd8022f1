"""Prometheus text exposition, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from test_multi_fixtures import check, ok_report, report, sample_report, target

from maildiag.models import MultiReport
from maildiag.report.prometheus import FAMILIES, render_prometheus

NOW = 1_700_000_000.5


def series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        assert family.documentation
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            assert sample.timestamp is None  # the textfile collector refuses timestamps
            out[key] = sample.value
    return out


def get(data: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    if "address" in labels:  # a target's name is its address unless a targets file names it
        labels.setdefault("name", labels["address"])
    return data[(name, frozenset(labels.items()))]


def test_parses_and_carries_every_metric() -> None:
    text = render_prometheus(sample_report(), now=lambda: NOW)
    data = series(text)
    smtp = {
        "address": "alice@example.test",
        "service": "smtp",
        "host": "smtp.example.test",
        "port": "465",
    }
    imap = dict(smtp, service="imap", host="imap.example.test", port="993")
    assert get(data, "maildiag_check_status", check="smtp.auth", status="fail", **smtp) == 1
    assert get(data, "maildiag_check_status", check="smtp.auth", status="ok", **smtp) == 0
    assert get(data, "maildiag_check_status", check="imap.tls", status="warn", **imap) == 1
    assert get(data, "maildiag_check_status", check="imap.auth", status="skip", **imap) == 1
    assert (
        get(data, "maildiag_check_status", address="alice@example.test", check="dns", status="ok")
        == 1
    )
    assert get(data, "maildiag_check_duration_seconds", check="smtp.auth", **smtp) == 0.12
    assert get(data, "maildiag_cert_days_to_expiry", check="smtp.tls", **smtp) == 80
    assert get(data, "maildiag_cert_days_to_expiry", check="imap.tls", **imap) == 10
    assert get(data, "maildiag_clock_offset_seconds", address="alice@example.test") == 0.31
    assert get(data, "maildiag_run_status", address="alice@example.test", status="fail") == 1
    assert get(data, "maildiag_run_status", address="alice@example.test", status="ok") == 0
    assert get(data, "maildiag_run_duration_seconds", address="alice@example.test") == 0.42
    assert get(data, "maildiag_last_run_timestamp_seconds", address="alice@example.test") == NOW
    alice = {"address": "alice@example.test"}
    assert get(data, "maildiag_findings", category="auth_failed", severity="fail", **alice) == 1
    assert get(data, "maildiag_findings", category="cert_expired", severity="warn", **alice) == 1
    assert get(data, "maildiag_findings", category="auth_required", severity="info", **alice) == 1
    # only the categories found: no series of zeros for the other twenty-odd
    assert {dict(labels)["category"] for name, labels in data if name == "maildiag_findings"} == {
        "auth_failed",
        "cert_expired",
        "auth_required",
    }


def test_one_hot_status_sums_to_one_per_check() -> None:
    data = series(render_prometheus(sample_report(), now=lambda: NOW))
    per_check: dict[frozenset[tuple[str, str]], float] = {}
    for (name, labels), value in data.items():
        if name == "maildiag_check_status":
            rest = frozenset(kv for kv in labels if kv[0] != "status")
            per_check[rest] = per_check.get(rest, 0) + value
    assert len(per_check) == 9
    assert set(per_check.values()) == {1}


def test_text_format_shape_for_the_textfile_collector() -> None:
    text = render_prometheus(sample_report(), now=lambda: NOW)
    assert text.endswith("\n")
    lines = text.splitlines()
    seen: list[str] = []
    for line in lines:
        if line.startswith("# HELP "):
            seen.append(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[2] == seen[-1] and line.split()[3] == "gauge"
        else:
            # samples follow their own family's HELP/TYPE: families are contiguous
            assert re.match(r"^[a-z_]+", line)
            assert re.match(r"^[a-z_]+", line).group() == seen[-1]  # type: ignore[union-attr]
    assert len(seen) == len(set(seen)) == len(FAMILIES) == 8


def test_label_values_are_escaped() -> None:
    hostile = 'evil"host\\name\nnext'
    rep = report("a@example.test", [check("smtp.connect", "fail", target(host=hostile))])
    text = render_prometheus(rep, now=lambda: NOW)
    assert 'host="evil\\"host\\\\name\\nnext"' in text
    data = series(text)
    assert (
        get(
            data,
            "maildiag_check_status",
            address="a@example.test",
            check="smtp.connect",
            service="smtp",
            host=hostile,
            port="465",
            status="fail",
        )
        == 1
    )


def test_multi_report_keeps_every_address_apart() -> None:
    multi = MultiReport.of([sample_report(), ok_report()])
    data = series(render_prometheus(multi, now=lambda: NOW))
    assert get(data, "maildiag_run_status", address="alice@example.test", status="fail") == 1
    assert get(data, "maildiag_run_status", address="bob@example.test", status="ok") == 1
    assert (
        get(
            data,
            "maildiag_cert_days_to_expiry",
            address="bob@example.test",
            check="smtp.tls",
            service="smtp",
            host="smtp.example.org",
            port="465",
        )
        == 200
    )
    addresses = {dict(labels)["address"] for _, labels in data}
    assert addresses == {"alice@example.test", "bob@example.test"}


def test_missing_data_means_no_series_not_a_made_up_value() -> None:
    smtp = target()
    rep = report(
        "a@example.test",
        [
            check("clock", "skip", summary="--no-clock given"),
            check("smtp.tls", "fail", smtp, "handshake failed", data={}),
        ],
    )
    text = render_prometheus(rep, now=lambda: NOW)
    assert "maildiag_cert_days_to_expiry{" not in text
    assert "maildiag_clock_offset_seconds{" not in text
    series(text)


def test_repeated_series_are_written_once() -> None:
    smtp = target()
    twice = [check("smtp.connect", tgt=smtp), check("smtp.connect", tgt=smtp)]
    rep = report("a@example.test", twice)
    series(render_prometheus(rep, now=lambda: NOW))  # asserts no duplicate series
