"""``--format prometheus``: text exposition format for node_exporter's textfile collector.

Metrics (all gauges; every series carries ``name`` and ``address`` — the name is a targets
file's ``name`` for its target, else the address — so files written by separate runs for separate
targets never collide, nor two targets of one address; check series add ``check`` and, for
server checks, ``service``, ``host`` and ``port``)::

    maildiag_check_status{name,address,check,service,host,port,status}
                                                    1 for the check's status, 0 for the other three
    maildiag_check_duration_seconds{name,address,check,service,host,port}
    maildiag_cert_days_to_expiry{name,address,check,service,host,port}   from each <svc>.tls check
    maildiag_clock_offset_seconds{name,address}     local clock minus reference
    maildiag_run_status{name,address,status}        1 for ok|warn|fail, 0 others
    maildiag_run_duration_seconds{name,address}
    maildiag_last_run_timestamp_seconds{name,address}                    when the file was rendered

The status is a one-hot ``status`` label (an enum as Prometheus' instrumentation guidelines and
OpenMetrics' StateSet model it) rather than a code like 0/1/2/-1: alerts read as what they mean
(``maildiag_check_status{status="fail"} == 1``), ``skip`` needs no magic number, and
``sum by (status) (maildiag_check_status)`` counts checks per state. Run-level checks (``dns``,
``clock``) have no ``service``/``host``/``port`` labels (an empty label and a missing one are
the same series in Prometheus). No sample carries a timestamp: the textfile collector refuses
them; staleness is what ``maildiag_last_run_timestamp_seconds`` is for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from maildiag.models import CheckResult, ClockFacts, Report, Status, TlsFacts
from maildiag.report import reports_of

if TYPE_CHECKING:
    from maildiag.models import MultiReport

Labels = tuple[tuple[str, str], ...]

_FAMILIES: tuple[tuple[str, str], ...] = (
    ("maildiag_check_status", "Status of each check in the last run: 1 for its status, 0 else."),
    ("maildiag_check_duration_seconds", "Time each check took in the last run."),
    ("maildiag_cert_days_to_expiry", "Days until the server certificate expires."),
    ("maildiag_clock_offset_seconds", "Local clock minus the reference clock."),
    ("maildiag_run_status", "Overall status of the last run: 1 for its status, 0 else."),
    ("maildiag_run_duration_seconds", "Time the last run took."),
    ("maildiag_last_run_timestamp_seconds", "Unix time the last run finished."),
)
_CHECK_STATES = (Status.OK, Status.WARN, Status.FAIL, Status.SKIP)
_RUN_STATES = (Status.OK, Status.WARN, Status.FAIL)


def render_prometheus(report: Report | MultiReport, *, now: Callable[[], float] = time.time) -> str:
    """All series of the report(s); ``now`` gives the run timestamp (passed in by tests)."""
    stamp = now()
    samples: dict[str, dict[Labels, float]] = {name: {} for name, _ in _FAMILIES}

    def add(name: str, labels: Labels, value: float) -> None:
        # A repeated series would make node_exporter reject the whole file: first one wins.
        samples[name].setdefault(labels, value)

    for single in reports_of(report):
        # the target's name (a --config target's ``name``, else its address) keeps two targets
        # of one address apart
        address = (("name", single.label), ("address", single.address))
        for check in single.checks:
            labels = address + _check_labels(check)
            for state in _CHECK_STATES:
                value = 1 if check.status is state else 0
                add("maildiag_check_status", labels + (("status", str(state)),), value)
            add("maildiag_check_duration_seconds", labels, check.observation.duration_ms / 1000)
            facts = check.observation.facts
            if isinstance(facts, TlsFacts) and facts.days_to_expiry is not None:
                add("maildiag_cert_days_to_expiry", labels, facts.days_to_expiry)
            if isinstance(facts, ClockFacts):
                add("maildiag_clock_offset_seconds", address, facts.offset_seconds)
        for state in _RUN_STATES:
            value = 1 if single.status is state else 0
            add("maildiag_run_status", address + (("status", str(state)),), value)
        add("maildiag_run_duration_seconds", address, single.duration_ms / 1000)
        add("maildiag_last_run_timestamp_seconds", address, stamp)

    lines: list[str] = []
    for name, help_text in _FAMILIES:
        if not samples[name]:
            continue
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} gauge")
        for series, sample in samples[name].items():
            lines.append(f"{name}{_format_labels(series)} {_format_value(sample)}")
    return "\n".join(lines) + "\n"


def _check_labels(check: CheckResult) -> Labels:
    labels: Labels = (("check", check.id),)
    target = check.observation.target
    if target is not None:
        labels += (
            ("service", str(target.service)),
            ("host", target.host),
            ("port", str(target.port)),
        )
    return labels


def _format_labels(labels: Labels) -> str:
    inner = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in labels)
    return "{" + inner + "}"


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the exposition format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
