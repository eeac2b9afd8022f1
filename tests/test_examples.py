"""Every file in examples/ parsed, and its maildiag command line run against loopback peers.

The CI snippets are run the way their runner runs them (bash -eo pipefail, in a scratch
directory laid out like the repository they expect), with the targets file swapped for one that
points at aiosmtpd peers on 127.0.0.1: an ok mailbox, one whose certificate expires inside
warn_days, and one whose port is closed.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_nagios import STATUS_LINE

from maildiag.report.prometheus import FAMILIES
from maildiag.targets import load_targets

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
PASSWORD = "loopback-secret"


# --- loopback peers and targets files ----------------------------------------------------------


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


class Peers:
    def __init__(self, smtp_server: Callable[..., Any], certs: Any, closed_port: int) -> None:
        auth = {"authenticator": _authenticator, "auth_require_tls": False}
        # TLS everywhere a password is sent: a login over plain text is itself a warning
        self.valid = smtp_server("ssl", tls=certs.valid, **auth).port
        self.expiring = smtp_server("ssl", tls=certs.expiring(10), **auth).port
        self.closed = closed_port
        self.ca_pem = str(certs.ca_pem)

    def targets(self, *kinds: str) -> str:
        entries = {
            "ok": {
                "address": "ok@example.test",
                "smtp": f"127.0.0.1:{self.valid}/ssl",
                "ca_file": self.ca_pem,
            },
            "warn": {
                "address": "warn@example.test",
                "smtp": f"127.0.0.1:{self.expiring}/ssl",
                "ca_file": self.ca_pem,
            },
            "fail": {"address": "fail@example.test", "smtp": f"127.0.0.1:{self.closed}/plain"},
        }
        doc = {
            "defaults": {
                "only": "smtp",
                "clock": False,
                "timeout": 3,
                "password_env": "MAIL_PASSWORD",
                "warn_days": 21,
                "crit_days": 7,
            },
            "targets": [entries[k] for k in kinds],
        }
        return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def peers(smtp_server: Callable[..., Any], certs: Any, closed_port: int) -> Peers:
    return Peers(smtp_server, certs, closed_port)


def shell_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDIAG")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", LANG="C.UTF-8", MAIL_PASSWORD=PASSWORD
    )
    env.update(extra)
    return env


def run_shell(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # GitHub's `shell: bash` and GitLab's runner both stop on the first failing command
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=shell_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_argv(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=shell_env(**env), capture_output=True, text=True, timeout=120)


_CONFIG_CLI: list[str] = []  # the probe's verdict, computed once per session


def needs_config_cli(tmp_path: Path) -> None:
    if not _CONFIG_CLI:
        probe = tmp_path / "probe.yaml"
        probe.write_text("targets: [bad address]\n", encoding="utf-8")
        argv = [str(BIN / "maildiag"), "check", "--config", str(probe), "--format", "json"]
        result = run_argv(argv)
        if "Missing argument" in result.stderr:
            _CONFIG_CLI.append("missing")
        else:
            assert result.returncode == 3 and "probe.yaml:1:" in result.stderr, result.stderr
            _CONFIG_CLI.append("ok")
    if _CONFIG_CLI[0] == "missing":
        pytest.skip("the CLI still requires ADDRESS together with --config")


def junit_counts(path: Path) -> tuple[int, int, list[str]]:
    root = ET.parse(path).getroot()
    kinds = [f.get("type", "") for f in root.iter("failure")]
    return int(root.get("tests", "0")), int(root.get("failures", "0")), kinds


def maildiag_line(script: str) -> str:
    """The one line of a shell script that runs ``maildiag check``."""
    lines = [ln.strip() for ln in script.replace("\\\n", " ").splitlines()]
    found = [ln for ln in lines if ln.startswith("maildiag check")]
    assert len(found) == 1, script
    return found[0]


def option_value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


# --- targets.yaml --------------------------------------------------------------------------------


def test_example_targets_file_is_valid() -> None:
    specs = load_targets(str(EXAMPLES / "targets.yaml")).targets
    assert [s.address for s in specs] == [
        "alerts@example.com",
        "postmaster@example.org",
        "noreply@example.net",
    ]
    assert specs[0].values["password_env"] == "MAIL_PASSWORD"
    smtp = specs[1].values["smtp"]
    assert (smtp.host, smtp.port, str(smtp.security)) == ("mail.example.org", 587, "starttls")
    assert specs[2].values["warn_days"] == 30 and specs[2].values["crit_days"] == 7


# --- GitHub Actions ------------------------------------------------------------------------------


def github_workflow() -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "github-actions" / "mail-health.yml").read_text())
    return doc  # type: ignore[no-any-return]


def test_github_workflow_shape() -> None:
    doc = github_workflow()
    triggers = doc[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["schedule"][0]["cron"]
    steps = doc["jobs"]["maildiag"]["steps"]
    check = next(s for s in steps if "maildiag check" in s.get("run", ""))
    assert check["env"]["MAIL_PASSWORD"] == "${{ secrets.MAIL_PASSWORD }}"
    argv = shlex.split(maildiag_line(check["run"]))
    assert option_value(argv, "--format") == "junit"
    report_file = argv[argv.index(">") + 1]
    publish = next(s for s in steps if "junit-report" in s.get("uses", ""))
    assert publish["if"] == "always()"
    assert publish["with"]["report_paths"] == report_file
    assert doc["permissions"]["checks"] == "write"


@pytest.mark.parametrize(
    ("kinds", "step_ok", "tests", "failures", "types"),
    [
        (("ok", "warn"), True, 12, 1, ["warning"]),
        (("ok", "warn", "fail"), False, None, None, None),
    ],
)
def test_github_step_runs(
    peers: Peers,
    tmp_path: Path,
    kinds: tuple[str, ...],
    step_ok: bool,
    tests: int | None,
    failures: int | None,
    types: list[str] | None,
) -> None:
    needs_config_cli(tmp_path)
    steps = github_workflow()["jobs"]["maildiag"]["steps"]
    script = next(s for s in steps if "maildiag check" in s.get("run", ""))["run"]
    argv = shlex.split(maildiag_line(script))
    config = tmp_path / option_value(argv, "--config")
    config.parent.mkdir(parents=True)
    config.write_text(peers.targets(*kinds), encoding="utf-8")
    result = run_shell(script, tmp_path)
    assert (result.returncode == 0) is step_ok, result.stderr
    report_path = tmp_path / argv[argv.index(">") + 1]
    got_tests, got_failures, got_types = junit_counts(report_path)
    if step_ok:
        assert got_failures == failures and got_types == types
    else:  # maildiag exited 2, so `|| [ $? -eq 1 ]` fails the step
        assert result.returncode != 0
        assert got_failures >= 2 and "warning" in got_types
        assert any(t != "warning" for t in got_types)
    assert PASSWORD not in report_path.read_text()


# --- GitLab CI -----------------------------------------------------------------------------------


def gitlab_job() -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / "gitlab-ci" / "gitlab-ci.yml").read_text())
    return doc["maildiag"]  # type: ignore[no-any-return]


def test_gitlab_job_shape() -> None:
    job = gitlab_job()
    assert {"if": '$CI_PIPELINE_SOURCE == "schedule"'} in job["rules"]
    assert job["allow_failure"] == {"exit_codes": [1]}
    argv = shlex.split(maildiag_line("\n".join(job["script"])))
    report_file = argv[argv.index(">") + 1]
    assert job["artifacts"]["reports"]["junit"] == report_file
    assert job["artifacts"]["when"] == "always"


@pytest.mark.parametrize(("kinds", "code"), [(("ok", "warn"), 1), (("warn", "fail"), 2)])
def test_gitlab_script_runs(
    peers: Peers, tmp_path: Path, kinds: tuple[str, ...], code: int
) -> None:
    needs_config_cli(tmp_path)
    job = gitlab_job()
    script = "\n".join(job["script"])
    argv = shlex.split(maildiag_line(script))
    config = tmp_path / option_value(argv, "--config")
    config.parent.mkdir(parents=True)
    config.write_text(peers.targets(*kinds), encoding="utf-8")
    result = run_shell(script, tmp_path)
    assert result.returncode == code, result.stderr
    allowed = result.returncode == 0 or result.returncode in job["allow_failure"]["exit_codes"]
    assert allowed is (code < 2)
    tests, failures, _ = junit_counts(tmp_path / argv[argv.index(">") + 1])
    assert tests > 0 and (failures > 0) is (code > 0)


# --- systemd -------------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((EXAMPLES / "systemd" / name).read_text())
    return parser


def test_systemd_units_shape() -> None:
    service, timer = unit("maildiag-check.service"), unit("maildiag-check.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["SuccessExitStatus"] == "1"
    assert service["Service"]["EnvironmentFile"].lstrip("-") == "/etc/maildiag/env"
    assert timer["Timer"]["Unit"] == "maildiag-check.service"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_exec_start_runs(peers: Peers, tmp_path: Path) -> None:
    needs_config_cli(tmp_path)
    service = unit("maildiag-check.service")["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "maildiag"
    argv[0] = str(BIN / "maildiag")
    config = tmp_path / "targets.yaml"
    argv[argv.index("--config") + 1] = str(config)
    success = {0, *map(int, service["SuccessExitStatus"].split())}

    config.write_text(peers.targets("ok", "warn"), encoding="utf-8")
    result = run_argv(argv)
    assert result.returncode == 1 and result.returncode in success, result.stderr
    assert "ok@example.test" in result.stdout and "warn@example.test" in result.stdout

    config.write_text(peers.targets("ok", "fail"), encoding="utf-8")
    result = run_argv(argv)
    assert result.returncode == 2 and result.returncode not in success
    assert PASSWORD not in result.stdout + result.stderr


# --- Nagios --------------------------------------------------------------------------------------


def nagios_objects() -> list[dict[str, str]]:
    text = (EXAMPLES / "nagios" / "maildiag.cfg").read_text()
    objects = []
    for kind, body in re.findall(r"define\s+(\w+)\s*\{(.*?)\}", text, re.S):
        fields = {"_type": kind}
        for line in body.strip().splitlines():
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
        objects.append(fields)
    return objects


def nagios_command_line(args: list[str]) -> list[str]:
    objects = nagios_objects()
    command = next(o for o in objects if o["_type"] == "command")
    line = command["command_line"]
    for n, value in enumerate(args, start=1):
        line = line.replace(f"${'ARG'}{n}$", value)
    assert "$" not in line
    argv = shlex.split(line)
    argv[0] = str(BIN / "maildiag")
    return argv


def test_nagios_definitions_shape() -> None:
    objects = nagios_objects()
    command = next(o for o in objects if o["_type"] == "command")
    service = next(o for o in objects if o["_type"] == "service")
    name, *args = service["check_command"].split("!")
    assert name == command["command_name"]
    argv = nagios_command_line(args)
    assert argv[1:3] == ["check", "postmaster@example.org"]
    assert option_value(argv, "--format") == "nagios"
    assert option_value(argv, "--only") == "smtp,imap"


@pytest.mark.parametrize(
    ("kind", "code", "state"), [("ok", 0, "OK"), ("warn", 1, "WARNING"), ("fail", 2, "CRITICAL")]
)
def test_nagios_command_runs(peers: Peers, kind: str, code: int, state: str) -> None:
    port = {"ok": peers.valid, "warn": peers.expiring, "fail": peers.closed}[kind]
    mode = "plain" if kind == "fail" else "ssl"
    extra = f"--smtp 127.0.0.1:{port}/{mode} --only smtp --no-clock --ca-file {peers.ca_pem}"
    result = run_argv(nagios_command_line([f"{kind}@example.test", extra]))
    assert result.returncode == code, result.stderr
    first, *long_output = result.stdout.rstrip("\n").split("\n")
    match = STATUS_LINE.match(first)
    assert match, first
    assert match.group("state") == state
    if kind == "warn":
        assert re.search(r"days_to_expiry_smtp=1[01];", match.group("perf"))
        assert any(line.startswith("[WARN] smtp.tls") for line in long_output)
    if kind == "fail":
        assert any(line.startswith("[FAIL] smtp.connect") for line in long_output)


# --- node_exporter textfile ----------------------------------------------------------------------

SCRIPT = EXAMPLES / "node_exporter" / "maildiag-textfile.sh"


def test_textfile_script_writes_atomically_and_keeps_old_file_on_error(
    peers: Peers, tmp_path: Path
) -> None:
    needs_config_cli(tmp_path)
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    config = tmp_path / "targets.yaml"
    config.write_text(peers.targets("ok", "fail"), encoding="utf-8")
    secrets = tmp_path / "env"
    secrets.write_text(f"MAIL_PASSWORD={PASSWORD}\n", encoding="utf-8")
    env = {
        "TEXTFILE_DIR": str(textfile_dir),
        "MAILDIAG": str(BIN / "maildiag"),
        "MAILDIAG_ENV": str(secrets),
        "MAIL_PASSWORD": "",
    }

    result = run_argv(["sh", str(SCRIPT), str(config)], **env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["maildiag.prom"]
    prom = textfile_dir / "maildiag.prom"
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    samples = {
        (s.name, s.labels.get("address"), s.labels.get("check"), s.labels.get("status")): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    assert samples[("maildiag_run_status", "ok@example.test", None, "ok")] == 1
    assert samples[("maildiag_run_status", "fail@example.test", None, "fail")] == 1
    assert samples[("maildiag_check_status", "fail@example.test", "smtp.connect", "fail")] == 1
    before = prom.read_text()

    config.write_text("targets:\n  - address: ok@example.test\n    pasword_env: X\n")
    result = run_argv(["sh", str(SCRIPT), str(config)], **env)
    assert result.returncode == 3
    assert "unknown key 'pasword_env'" in result.stderr
    assert "keeping the previous" in result.stderr
    assert prom.read_text() == before
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["maildiag.prom"]


def test_alert_rules_use_only_published_metrics() -> None:
    doc = yaml.safe_load((EXAMPLES / "node_exporter" / "maildiag-alerts.yml").read_text())
    names = {name for name, _ in FAMILIES}
    rules = [r for group in doc["groups"] for r in group["rules"]]
    assert len(rules) == 5
    for rule in rules:
        used = set(re.findall(r"\bmaildiag_[a-z_]+", rule["expr"]))
        assert used and used <= names, rule["expr"]
        assert rule["labels"]["severity"] in {"warning", "critical"}


# --- the exporter: prometheus/ and systemd/maildiag-exporter.service ---------------------------

PROM = EXAMPLES / "prometheus"


def example_exporter() -> Any:
    from maildiag.commands.exporter import build
    from maildiag.options import EXPORTER

    values = EXPORTER.checked({"config": str(PROM / "exporter.yaml")})
    return build(EXPORTER, values, environ={"ALERTS_PASSWORD": PASSWORD})


def published_metrics() -> set[str]:
    """Every metric name the exporter can answer with, and Prometheus's own ``up``."""
    from maildiag.exporter import PROBE_FAMILIES

    exporter, _ = example_exporter()
    names = {name for name, _ in FAMILIES} | set(PROBE_FAMILIES) | {"up"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for metric in exporter.registry.collect():
        names |= {metric.name + s for s in suffixes.get(metric.type, ("",))}
    return names


def test_promtool_checks_the_rules_their_unit_tests_and_the_scrape_config() -> None:
    from prombin import require

    promtool = require("promtool")
    for args in (
        ["check", "rules", "maildiag-alerts.yml"],
        ["test", "rules", "maildiag-alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        result = subprocess.run(
            [str(promtool), *args], cwd=PROM, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_exporter_file_and_scrape_config_agree() -> None:
    from maildiag.exporter import server_config

    exporter, listen = example_exporter()
    assert listen == ("0.0.0.0", 9467)
    assert exporter.settings.allow_adhoc and exporter.settings.max_probes == 64
    scrape = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    # every target the scrape names is a target of the file, by name
    assert set(jobs["maildiag"]["static_configs"][0]["targets"]) == set(exporter.targets)
    module = jobs["maildiag-servers"]["params"]["module"][0]
    for target in jobs["maildiag-servers"]["static_configs"][0]["targets"]:
        server_config(target, exporter.modules[module])  # raises for a target it cannot probe
    # hashmod over three exporters, each of which is also scraped for its own metrics
    relabel = jobs["maildiag"]["relabel_configs"]
    modulus = next(r["modulus"] for r in relabel if r.get("action") == "hashmod")
    shards = [r["replacement"] for r in relabel if r.get("source_labels") == ["__tmp_shard"]]
    assert len(shards) == modulus == 3
    assert set(shards) == set(jobs["maildiag-exporter"]["static_configs"][0]["targets"])
    assert all(p["module"] for p in [jobs["maildiag-servers"]["params"]])


def test_exporter_alerts_and_dashboard_use_only_published_metrics() -> None:
    names = published_metrics()
    doc = yaml.safe_load((PROM / "maildiag-alerts.yml").read_text())
    alerts = {r["alert"]: r for group in doc["groups"] for r in group["rules"]}
    for wanted in ("MailCertificateExpiresSoon", "MailLoginFailing", "MailPortBlocked"):
        assert wanted in alerts
    assert "MailClockSkew" in alerts
    exprs = [r["expr"] for r in alerts.values()]
    dashboard = json.loads((PROM / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all({"x", "y", "w", "h"} <= set(p["gridPos"]) for p in panels)
    assert dashboard["templating"]["list"][0]["name"] == "instance"
    exprs += [t["expr"] for p in panels for t in p["targets"]]
    for expr in exprs:
        used = set(re.findall(r"\b(?:maildiag|process)_[a-z_]+\b", expr))
        used |= {"up"} if re.search(r"\bup\{", expr) else set()
        assert used and used <= names, (expr, used - names)


def test_exporter_unit_serves_and_stops_on_sigterm(peers: Peers, tmp_path: Path) -> None:
    import signal

    from test_exporter import Running

    service = unit("maildiag-exporter.service")["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "maildiag" and argv[1] == "exporter"
    argv[0] = str(BIN / "maildiag")
    config = tmp_path / "exporter.yaml"
    argv[argv.index("--config") + 1] = str(config)
    doc = yaml.safe_load(peers.targets("ok", "fail"))
    doc["exporter"] = {"listen": "127.0.0.1:0"}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    proc = subprocess.Popen(argv, env=shell_env(), stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert port, first
        running = Running(f"http://127.0.0.1:{port.group(1)}", None)  # type: ignore[arg-type]
        assert running.probe("ok@example.test").value("maildiag_probe_success") == 1
        assert running.probe("fail@example.test").value("maildiag_probe_success") == 0
        proc.send_signal(signal.SIGTERM)  # systemd's stop
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == ""
    # a bad file stops it with 3, which the unit does not restart
    config.write_text("targets:\n  - address: ok@example.test\n    pasword_env: X\n")
    result = run_argv(argv)
    assert result.returncode == 3 and "unknown key 'pasword_env'" in result.stderr
    assert str(result.returncode) in service["RestartPreventExitStatus"].split()
