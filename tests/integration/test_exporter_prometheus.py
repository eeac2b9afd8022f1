"""Debian's Prometheus scrapes ``maildiag exporter``, which probes the real Postfix and Dovecot.

Three exporters (one targets file) run on 127.0.0.1; Prometheus runs on 127.0.0.1 with
examples/prometheus/prometheus.yml itself — its blackbox-style relabeling (``__param_target``,
``__address__`` to the exporter), its hashmod sharding over three exporters, its server-probe
job and its alerting rules — with only the exporter addresses, the target lists and the
intervals (3 s) put in for the test. The results are read back through Prometheus's HTTP API
(/api/v1/query), as a dashboard or an alert would read them: the healthy mailbox's probe
succeeds, the wrong password, the refused port and the expired certificate each show as the
series and the pending alert they should, every target is probed by exactly one exporter, and
every query of the example Grafana dashboard is valid PromQL with an answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .servers import (
    ALICE,
    CAROL,
    DATA_MARKER,
    GOOD_CERT_DAYS,
    HOST,
    MAIL_HOST,
    PASSWORDS,
    MailServers,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "prometheus"
WRONG = "Wrong-Exporter-Integration-1203"
TARGETS = ("alice", "carol-wrong-password", "refused", "expired")
SHARDS = 3  # exporters, as in the example's hashmod


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text(encoding="utf-8", errors="replace")


def targets_file(servers: MailServers, path: Path) -> None:
    p = servers.ports
    doc = {
        "defaults": {
            "resolver": servers.resolver,
            "ca_file": str(servers.ca_pem),
            "clock": False,
            "timeout": 5,
        },
        "targets": [
            {"address": ALICE, "name": "alice", "password_env": "IT_ALICE_PASSWORD"},
            {
                "address": CAROL,
                "name": "carol-wrong-password",
                "password_env": "IT_WRONG_PASSWORD",
                "only": "imap",
            },
            {"address": "dave@example.test", "name": "refused", "smtp": f"{HOST}:{p.refused}/ssl"},
            {
                "address": "erin@example.test",
                "name": "expired",
                "smtp": f"{MAIL_HOST}:{p.smtp_expired}/ssl",
            },
        ],
        "modules": {"mail_server": {"only": "smtp"}},
        "exporter": {"listen": "127.0.0.1:0", "allow_adhoc": True, "timeout_offset": 0.1},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def start_exporters(config: Path, logs: list[Path]) -> list[tuple[Process, str]]:
    """One exporter per log file, all started at once; each with the address it serves on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDIAG_")}
    env.update(IT_ALICE_PASSWORD=PASSWORDS[ALICE], IT_WRONG_PASSWORD=WRONG)
    processes = []
    for index, log in enumerate(logs):
        proc = subprocess.Popen(
            [sys.executable, "-m", "maildiag", "exporter", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w", encoding="utf-8"),
            text=True,
            cwd=REPO,
        )
        processes.append(Process(f"exporter-{index}", proc, log))
    started = []
    deadline = time.monotonic() + 30
    for process in processes:
        while True:
            text = process.log.read_text(encoding="utf-8")
            found = re.search(r"http://(127\.0\.0\.1:\d+)/probe", text)
            if found:
                started.append((process, found.group(1)))
                break
            if process.proc.poll() is not None or time.monotonic() > deadline:
                for p in processes:
                    p.stop()
                pytest.fail(f"{process.name} did not start:\n{text}", pytrace=False)
            time.sleep(0.05)
    return started


def prometheus_config(exporters: list[str], servers: MailServers) -> str:
    """examples/prometheus/prometheus.yml with the test's exporters, targets and intervals."""
    text = (EXAMPLES / "prometheus.yml").read_text(encoding="utf-8")
    for index, address in enumerate(exporters):
        text = text.replace(f"exporter-{index}.example.net:9467", address)
    assert "example.net:9467" not in text, "the example names more exporters than the test runs"
    doc = yaml.safe_load(text)
    # 3 s: a probe gets 2.9 s, a network step a third of it (Dovecot refuses a wrong password
    # after half a second); the rules are evaluated every second
    doc["global"] = {"scrape_interval": "3s", "scrape_timeout": "3s", "evaluation_interval": "1s"}
    doc["rule_files"] = [str(EXAMPLES / "maildiag-alerts.yml")]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    jobs["maildiag"]["static_configs"] = [{"targets": list(TARGETS)}]
    server = f"{MAIL_HOST}:{servers.ports.submissions}"
    jobs["maildiag-servers"]["static_configs"] = [{"targets": [server]}]
    return yaml.safe_dump(doc, sort_keys=False)


def start_prometheus(binary: Path, root: Path, config: str) -> tuple[Process, str]:
    import socket

    (root / "prometheus.yml").write_text(config, encoding="utf-8")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = root / "prometheus.log"
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w", encoding="utf-8"),
        text=True,
    )
    process = Process("prometheus", proc, log)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    text = process.stop()
    pytest.fail(f"Prometheus did not become ready:\n{text[-3000:]}", pytrace=False)


@dataclass
class Stack:
    prometheus: str
    exporters: list[str]
    processes: list[Process]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def by(self, promql: str, label: str = "instance") -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def wait(
        self, promql: str, want: Callable[[dict[str, float]], bool], label: str = "instance"
    ) -> dict[str, float]:
        """The query's answer by ``label`` once ``want`` holds for it (30 s at most)."""
        deadline = time.monotonic() + 30
        while True:
            got = self.by(promql, label)
            if want(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.25)


@pytest.fixture
def stack(mail_servers: MailServers, tmp_path: Path) -> Iterator[Stack]:
    from prombin import require

    binary = require("prometheus")
    config = tmp_path / "exporter.yaml"
    targets_file(mail_servers, config)
    processes: list[Process] = []
    mark = mail_servers.log_mark()
    try:
        logs = [tmp_path / f"exporter-{index}.log" for index in range(SHARDS)]
        started = start_exporters(config, logs)
        processes += [process for process, _ in started]
        exporters = [address for _, address in started]
        root = tmp_path / "prometheus"
        root.mkdir()
        process, url = start_prometheus(binary, root, prometheus_config(exporters, mail_servers))
        processes.append(process)
        yield Stack(url, exporters, processes)
    finally:
        logs = {p.name: p.stop() for p in reversed(processes)}
        for name, text in logs.items():
            if name.startswith("exporter"):
                # an exporter says one line at start and nothing else, never a password
                assert PASSWORDS[ALICE] not in text and WRONG not in text
                assert text.count("\n") == 1, f"{name} logged:\n{text}"
    # what never happens, by the servers' word: no message accepted, none delivered
    postfix = mail_servers.logs_since(mark)["postfix"]
    assert DATA_MARKER not in postfix and "status=sent" not in postfix
    assert mail_servers.queued_files() == []


def test_prometheus_scrapes_the_exporters(stack: Stack, mail_servers: MailServers) -> None:
    """Read over the last minute (``*_over_time``), waiting until each answer is complete: one
    probe on a busy machine may outlast its time, and what each target showed in some scrape is
    what counts."""
    server = f"{MAIL_HOST}:{mail_servers.ports.submissions}"
    everyone = {*TARGETS, server}
    expected = {"alice": 1, "carol-wrong-password": 0, "refused": 0, "expired": 0, server: 1}
    success = stack.wait("max_over_time(maildiag_probe_success[1m])", expected.__eq__)
    shown: dict[str, Any] = {"max_over_time(maildiag_probe_success[1m])": success}
    assert success == expected, stack.query('maildiag_check_status{status="fail"} == 1')

    up = stack.wait(
        'up{job=~"maildiag|maildiag-servers|maildiag-exporter"}', lambda got: everyone <= set(got)
    )
    shown["up"] = up
    assert all(value == 1 for value in up.values()), up

    def pairs(promql: str, label: str, want: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """(instance, label) of the query's series, once they include ``want`` (30 s at most)."""
        deadline = time.monotonic() + 30
        while True:
            got = {(r["metric"]["instance"], r["metric"][label]) for r in stack.query(promql)}
            if want <= got or time.monotonic() > deadline:
                shown[promql] = sorted(got)
                return got

    bad = {
        ("carol-wrong-password", "auth_failed"),
        ("refused", "connection_refused"),
        ("expired", "cert_expired"),
    }
    assert bad <= pairs('max_over_time(maildiag_findings{severity="fail"}[1m])', "category", bad)
    failed = {
        ("carol-wrong-password", "imap.auth"),
        ("refused", "smtp.connect"),
        ("expired", "smtp.tls"),
    }
    query = 'max_over_time(maildiag_check_status{status="fail"}[1m]) == 1'
    assert failed <= pairs(query, "check", failed)

    days = stack.by("max_over_time(maildiag_cert_days_to_expiry[1m])")
    shown["max_over_time(maildiag_cert_days_to_expiry[1m])"] = days
    assert days["alice"] in (GOOD_CERT_DAYS, GOOD_CERT_DAYS - 1)
    assert days[server] == days["alice"] and days["expired"] < 0

    # hashmod: each target is probed by one exporter, and the targets are spread over them
    exporter_of = stack.by('up{job="maildiag"}', "exporter")
    per_target = stack.by(
        'count by (instance) (count by (instance, exporter) (up{job="maildiag"}))'
    )
    assert per_target == {t: 1 for t in TARGETS}, per_target
    shown["exporters of job maildiag"] = sorted(exporter_of)
    assert len(exporter_of) >= 2 and set(exporter_of) <= set(stack.exporters)
    probes = stack.wait(
        'sum by (instance) (maildiag_exporter_probes_total{job="maildiag-exporter"}) > 0',
        lambda got: set(exporter_of) <= set(got),
    )
    shown["sum by (instance) (maildiag_exporter_probes_total) > 0"] = probes
    assert set(exporter_of) <= set(probes), probes

    # the example's alerting rules see the same: pending (their `for:` has not passed yet)
    alerts = {
        ("carol-wrong-password", "MailLoginFailing"),
        ("refused", "MailPortBlocked"),
        ("expired", "MailCertificateExpiresSoon"),
    }
    assert alerts <= pairs('max_over_time(ALERTS{alertstate="pending"}[1m])', "alertname", alerts)

    # every query of the example dashboard is valid PromQL (the API refuses one that is not),
    # and each has data but the rates, which need more history than these few seconds
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text(encoding="utf-8"))
    answered = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", ".+").replace("$__rate_interval", "1m")
            answered[f"{panel['title']} [{target['refId']}]"] = (len(stack.query(expr)), expr)
    shown["dashboard queries: series answered"] = {k: n for k, (n, _) in answered.items()}
    empty = [k for k, (n, expr) in answered.items() if not n and "rate(" not in expr]
    assert not empty, empty
    print(json.dumps(shown, indent=1, sort_keys=True))
