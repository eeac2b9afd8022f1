"""``--format prometheus`` and the exporter's ``/probe``: a report as Prometheus metrics.

The metric families are declared once, here; ``families()`` fills them from a report, and
prometheus_client writes the exposition format — the text file for node_exporter's textfile
collector (``render_prometheus``), or the answer to a scrape of ``maildiag exporter``, which
adds its ``maildiag_probe_*`` families (``maildiag.exporter``).

Metrics (all gauges; every series carries ``name`` and ``address`` — the name is a targets
file's ``name`` for its target, else the address — so files written by separate runs for separate
targets never collide, nor two targets of one address; check series add ``check`` and, for
server checks, ``service``, ``host`` and ``port``)::

    maildiag_check_status{name,address,check,service,host,port,status}
                                                    1 for the check's status, 0 for the other three
    maildiag_check_duration_seconds{name,address,check,service,host,port}
    maildiag_cert_days_to_expiry{name,address,check,service,host,port}   from each <svc>.tls check
    maildiag_clock_offset_seconds{name,address}     local clock minus reference
    maildiag_findings{name,address,category,severity}  findings of the run, counted
    maildiag_run_status{name,address,status}        1 for ok|warn|fail, 0 others
    maildiag_run_duration_seconds{name,address}
    maildiag_last_run_timestamp_seconds{name,address}                    when the file was rendered

The status is a one-hot ``status`` label (an enum as Prometheus' instrumentation guidelines and
OpenMetrics' StateSet model it) rather than a code like 0/1/2/-1: alerts read as what they mean
(``maildiag_check_status{status="fail"} == 1``), ``skip`` needs no magic number, and
``sum by (status) (maildiag_check_status)`` counts checks per state. Run-level checks (``dns``,
``clock``) have no ``service``/``host``/``port`` labels (an empty label and a missing one are
the same series in Prometheus). ``maildiag_findings`` has a series only for the categories the
run found (a category absent from a run is absent from its metrics, not a row of zeros: 25
categories times thousands of targets would be mostly zeros). No sample carries a timestamp:
the textfile collector refuses them; staleness is what ``maildiag_last_run_timestamp_seconds``
is for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maildiag.models import CheckResult, ClockFacts, Report, Status, TlsFacts
from maildiag.report import reports_of

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from maildiag.models import MultiReport

Labels = tuple[tuple[str, str], ...]

FAMILIES: tuple[tuple[str, str], ...] = (
    ("maildiag_check_status", "Status of each check in the last run: 1 for its status, 0 else."),
    ("maildiag_check_duration_seconds", "Time each check took in the last run."),
    ("maildiag_cert_days_to_expiry", "Days until the server certificate expires."),
    ("maildiag_clock_offset_seconds", "Local clock minus the reference clock."),
    ("maildiag_findings", "Findings of the last run by category and severity."),
    ("maildiag_run_status", "Overall status of the last run: 1 for its status, 0 else."),
    ("maildiag_run_duration_seconds", "Time the last run took."),
    ("maildiag_last_run_timestamp_seconds", "Unix time the last run finished."),
)
_CHECK_STATES = (Status.OK, Status.WARN, Status.FAIL, Status.SKIP)
_RUN_STATES = (Status.OK, Status.WARN, Status.FAIL)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its samples by label set (a gauge unless ``kind`` says otherwise)."""

    name: str
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)
    kind: str = "gauge"

    def add(self, labels: Labels, value: float) -> None:
        # A repeated series would make node_exporter reject the whole file: first one wins.
        self.samples.setdefault(labels, value)


def families(report: Report | MultiReport, *, now: Callable[[], float] = time.time) -> list[Family]:
    """The families of ``FAMILIES`` filled from the report(s); ``now`` gives the run timestamp.

    A family without a sample is left out (no ``# HELP`` line for nothing)."""
    stamp = now()
    out = {name: Family(name, help_text) for name, help_text in FAMILIES}

    def add(name: str, labels: Labels, value: float) -> None:
        out[name].add(labels, value)

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
        counts: dict[Labels, int] = {}
        for finding in single.findings:
            key: Labels = address + (
                ("category", str(finding.category)),
                ("severity", str(finding.severity)),
            )
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            add("maildiag_findings", key, count)
        for state in _RUN_STATES:
            value = 1 if single.status is state else 0
            add("maildiag_run_status", address + (("status", str(state)),), value)
        add("maildiag_run_duration_seconds", address, single.duration_ms / 1000)
        add("maildiag_last_run_timestamp_seconds", address, stamp)
    return [f for f in out.values() if f.samples]


def render_prometheus(report: Report | MultiReport, *, now: Callable[[], float] = time.time) -> str:
    """All series of the report(s) in the text exposition format (version 0.0.4)."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry(families(report, now=now))).decode("utf-8")


def to_metrics(found: Iterable[Family]) -> Iterator[Metric]:
    """Each family as prometheus_client's ``Metric``, which its writers take."""
    from prometheus_client.metrics_core import Metric

    for family in found:
        metric = Metric(family.name, family.help, family.kind)
        for labels, value in family.samples.items():
            metric.add_sample(family.name, dict(labels), value)
        yield metric


class _Collected:
    """A collector of fixed families: what prometheus_client's writers read from a registry."""

    def __init__(self, found: list[Family]) -> None:
        self._found = found

    def collect(self) -> Iterator[Metric]:
        return to_metrics(self._found)


def registry(found: list[Family]) -> CollectorRegistry:
    """A registry that holds only ``found`` (no process or platform metrics)."""
    from prometheus_client.registry import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collected(found))
    return reg


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
