"""Targets files: strict validation with file:line messages, the command line's part, and
check_targets."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_multi_fixtures import ok_report, sample_report

from maildiag.errors import ExitCode
from maildiag.models import MULTI_SCHEMA, MultiReport, Report, Service, Status
from maildiag.pipeline import check_targets
from maildiag.targets import ConfigError, TargetSpec, load_targets


def write(tmp_path: Path, text: str, name: str = "targets.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ":")
    return message[len(path) :]


# --- valid files -----------------------------------------------------------------------------


def test_full_config_with_defaults(tmp_path: Path) -> None:
    from peers import make_certs

    make_certs(tmp_path)  # a real CA bundle: the file is checked as --ca-file is
    path = write(
        tmp_path,
        """
        max_parallel: 3
        defaults:
          timeout: 5
          warn_days: 30
          crit_days: 10
          clock: false
          only: smtp,imap
        targets:
          - alice@example.test
          - address: bob@example.test
            smtp: 127.0.0.1:2525/plain
            only: [smtp]
            login: bob
            password_env: BOB_PASSWORD
            from: noreply@example.test
            ca_file: ca.pem
            resolver: 127.0.0.1:5353
            time_server: 127.0.0.1:1123
            clock: true
            timeout: 2.5
            warn_days: 14
            crit_days: 3
    """,
    )
    config = load_targets(path)
    assert config.max_parallel == 3
    alice, bob = config.targets
    a, b = alice.values, bob.values
    assert (alice.address, alice.index, alice.line) == ("alice@example.test", 1, 9)
    assert a["timeout"] == 5.0 and a["warn_days"] == 30 and a["clock"] is False
    assert a["only"] == frozenset({Service.SMTP, Service.IMAP})
    assert "smtp" not in a and "login" not in a and "password_env" not in a
    assert (bob.index, bob.line) == (2, 10)
    assert (b["smtp"].host, b["smtp"].port, str(b["smtp"].security)) == (
        "127.0.0.1",
        2525,
        "plain",
    )
    assert b["only"] == frozenset({Service.SMTP})
    assert (b["login"], b["sender"], b["password_env"]) == (
        "bob",
        "noreply@example.test",
        "BOB_PASSWORD",
    )
    assert b["ca_file"] == str(tmp_path / "ca.pem")  # relative to the config file
    assert (b["resolver"], b["time_server"], b["clock"]) == (
        "127.0.0.1:5353",
        "127.0.0.1:1123",
        True,
    )
    assert (b["timeout"], b["warn_days"], b["crit_days"]) == (2.5, 14, 3)


def test_minimal_config_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - &base
            address: a@example.test
            timeout: 3
          - <<: *base
            address: b@example.test
    """,
    )
    a, b = load_targets(path).targets
    assert a.values["timeout"] == b.values["timeout"] == 3.0
    assert b.address == "b@example.test"  # a key overriding a merged one is not a duplicate
    assert load_targets(path).max_parallel == 4


def test_check_values_overlay_the_command_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          timeout: 4
        targets:
          - address: a@example.test
            smtp: 127.0.0.1:2525/plain
            only: smtp
            clock: false
          - b@example.test
    """,
    )
    a, b = load_targets(path).targets
    command_line = {
        "address": "ignored@example.test",
        "login": "cli-login",
        "sender": "x@example.test",
        "password_env": "CLI_PW",
        "smtp": "cli.example.test",
        "format": "junit",
        "warn_days": 30,
        "crit_days": 5,
        "lang": "ru",
        "fail_on": "warn",
        "config": path,
    }
    va = a.check_values(command_line)
    assert va["address"] == "a@example.test"
    assert (str(va["smtp"].port), va["only"], va["clock"], va["timeout"]) == (
        "2525",
        frozenset({Service.SMTP}),
        False,
        4.0,
    )
    # per-mailbox settings never leak from the command line into a target
    assert (va.get("login"), va.get("sender"), va.get("password_env")) == (None, None, None)
    # run-wide and unset ones come from the command line
    assert (va["format"], va["lang"], va["fail_on"], va["warn_days"], va["crit_days"]) == (
        "junit",
        "ru",
        "warn",
        30,
        5,
    )
    vb = b.check_values(command_line)
    assert vb.get("smtp") is None and vb.get("only") is None and vb.get("clock") is None


def test_password_from_environment_only(tmp_path: Path, cli: Any) -> None:
    path = write(
        tmp_path,
        """
        targets:
          - address: a@example.test
            password_env: MAILDIAG_TEST_A_PW
          - b@example.test
    """,
    )
    a, b = load_targets(path).targets
    assert a.values["password_env"] == "MAILDIAG_TEST_A_PW" and "password_env" not in b.values
    result = cli("check", "--config", path)
    assert result.code == 3
    assert result.err.strip() == (
        f"maildiag: {path}:2: target 1: --password-env MAILDIAG_TEST_A_PW: that environment "
        "variable is not set"
    )


# --- errors ----------------------------------------------------------------------------------


def test_unknown_key_names_line_target_and_suggestion(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """
        targets:
          - alice@example.test
          - address: bob@example.test
            pasword_env: BOB_PW
    """,
    )
    assert message == ":4: unknown key 'pasword_env' in target 2 (did you mean 'password_env'?)"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "targets:\n  - address: a@example.test\n    timeout: ten\n",
            ":3: 'timeout' in target 1: must be a number of seconds, not 'ten'",
        ),
        (
            "targets:\n  - address: a@example.test\n    timeout: true\n",
            ":3: 'timeout' in target 1: must be a number of seconds, not True",
        ),
        (
            "targets:\n  - address: a@example.test\n    warn_days: 2.5\n",
            ":3: 'warn_days' in target 1: must be a whole number of days from 0 to 3650, not 2.5",
        ),
        (
            "targets:\n  - address: a@example.test\n    clock: 'no'\n",
            ":3: 'clock' in target 1: must be true or false, not 'no'",
        ),
        (
            "targets:\n  - address: a@example.test\n    login: [a, b]\n",
            ":3: 'login' in target 1 must be a single value, not a list",
        ),
        (
            "targets:\n  - address: a@example.test\n    only: smtp,imap4\n",
            ":3: 'only' in target 1: unknown service 'imap4' (use smtp, imap, pop3)",
        ),
        (
            "targets:\n  - address: a@example.test\n    smtp: 'host:99999'\n",
            ":3: 'smtp' in target 1: port must be a number from 1 to 65535",
        ),
        (
            "targets:\n  - address: a@example.test\n    smtp: host/tls\n",
            ":3: 'smtp' in target 1: mode must be ssl, starttls or plain, not 'tls'",
        ),
        (
            "targets:\n  - address: a@example.test\n    resolver: dns.example.test\n",
            ":3: 'resolver' in target 1: expected an IP address, optionally with :PORT, "
            "not 'dns.example.test'",
        ),
        (
            "targets:\n  - address: a@example.test\n    password_env: my password\n",
            ":3: 'password_env' in target 1: must be the name of an environment variable "
            "(like MAIL_PASSWORD), not 'my password'",
        ),
        (
            "targets:\n  - address: a@example.test\n    from: nobody\n",
            ":3: 'from' in target 1: 'nobody' is not a mail address (expected name@domain)",
        ),
        (
            "targets:\n  - address: a@example.test\n    ca_file: missing.pem\n",
            ":3: 'ca_file' in target 1: no such file",
        ),
        (
            "targets:\n  - address: a@example.test\n    time_server: 'ntp.example.test:0'\n",
            ":3: 'time_server' in target 1: port must be a number from 1 to 65535",
        ),
        (
            "max_parallel: 0\ntargets: [a@example.test]\n",
            ":1: 'max_parallel' must be a whole number from 1 to 64",
        ),
        (
            "defaults:\n  timeout: -1\ntargets: [a@example.test]\n",
            ":2: 'timeout' in defaults: must be above 0 and at most 3600 seconds, not -1",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, body: str, expected: str) -> None:
    assert error_of(tmp_path, body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("targets:\n  - smtp: 127.0.0.1:25\n", ":2: target 1 has no 'address'"),
        (
            "targets:\n  - address: alice\n",
            ":2: 'address' in target 1: 'alice' is not a mail address (expected name@domain)",
        ),
        ("targets:\n  - 42\n", ":2: 'address' in target 1: must be a non-empty text, not 42"),
        (
            "targets:\n  - [a@example.test]\n",
            ":2: target 1 must be an address or a mapping of options",
        ),
        ("targets: []\n", ":1: 'targets' must be a list with at least one target"),
        ("defaults:\n  timeout: 3\n", ":1: no 'targets' list: name at least one target"),
        ("", ":1: the file is empty: expected 'targets:' with a list"),
        ("- a@example.test\n", ":1: expected a mapping with a 'targets' list at the top level"),
        (
            "target:\n  - a@example.test\n",
            ":1: unknown key 'target' in the top level (did you mean 'targets'?)",
        ),
        (
            "defaults:\n  address: a@example.test\ntargets: [b@example.test]\n",
            ":2: 'address' cannot be a default: it belongs in a target",
        ),
        (
            "targets:\n  - address: a@example.test\n    password: hunter2\n",
            ":3: 'password' is not accepted in target 1: put the password in an environment "
            "variable and name it with 'password_env'",
        ),
        (
            "targets:\n  - address: a@example.test\n    timeout: 3\n    timeout: 4\n",
            ":4: duplicate key 'timeout' in target 1",
        ),
        (
            "targets:\n  - a@example.test\n  - b@example.test\n  - a@example.test\n",
            ":4: target 3 repeats the address 'a@example.test' of target 1: give it a 'name' of "
            "its own (or narrow one with 'only')",
        ),
        (
            "targets:\n  - a@example.test\n  - address: b@example.test\n    name: a@example.test\n",
            ":3: target 2 has the same name 'a@example.test' as target 1: give it another 'name'",
        ),
        (
            "targets:\n  - address: a@example.test\n    name: ''\n",
            ":3: 'name' in target 1: must be a non-empty text",
        ),
        (
            "targets:\n  - address: a@example.test\n    only: smtp\n    imap: 127.0.0.1:143\n",
            ":2: target 1: 'imap' names a imap server but 'only' leaves imap out",
        ),
        (
            "targets:\n  - address: a@example.test\n    warn_days: 5\n    crit_days: 7\n",
            ":2: target 1: 'crit_days' (7) cannot exceed 'warn_days' (5)",
        ),
    ],
)
def test_structure_errors(tmp_path: Path, body: str, expected: str) -> None:
    assert error_of(tmp_path, body) == expected


def test_password_value_never_echoed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "targets:\n  - address: a@example.test\n    password: hunter2\n")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("targets:\n  - address: a@example.test\n    timeout: [1, 2\n", 4),
        ("targets:\n  - address: a@example.test\n  smtp: x: y\n", 3),
        ("targets:\n\t- a@example.test\n", 2),
        ("targets:\n  - a@example.test\n---\ntargets: []\n", 3),
    ],
)
def test_bad_yaml_names_the_line(tmp_path: Path, body: str, line: int) -> None:
    message = error_of(tmp_path, body)
    assert message.startswith(f":{line}: bad YAML: "), message


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the config file: No such file"):
        load_targets(missing)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"targets:\n  - caf\xe9@example.test\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml:2: the config file is not UTF-8 text"):
        load_targets(str(latin))


def test_alias_bomb_is_bounded(tmp_path: Path) -> None:
    # nested aliases cannot blow up: the schema is shallow and lists of lists are rejected
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    lines += ["targets:", "  - address: a@example.test", "    only: *a11"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="unknown key 'a0' in the top level"):
        load_targets(path)
    assert time.monotonic() - started < 2


# --- check_targets and MultiReport----------------------------------------------------------------


def specs(n: int) -> list[TargetSpec]:
    return [
        TargetSpec(i, i + 1, "t.yaml", {"address": f"user{i}@example.test"})
        for i in range(1, n + 1)
    ]


def test_check_targets_keeps_order_respects_cap_and_takes_the_worst() -> None:
    lock = threading.Lock()
    running = peak = 0

    def run_one(spec: TargetSpec) -> Report:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05 if spec.index % 2 else 0.01)  # finish out of order
        with lock:
            running -= 1
        if spec.index == 3:
            return sample_report(spec.address)
        return ok_report(spec.address)

    multi = check_targets(specs(6), run_one, max_parallel=2)
    assert peak == 2
    assert [r.address for r in multi.reports] == [f"user{i}@example.test" for i in range(1, 7)]
    assert multi.status is Status.FAIL
    assert multi.exit_code is ExitCode.FAIL
    assert multi.duration_ms >= 50


def test_exit_code_is_the_worst_of_the_reports() -> None:
    ok, failing = ok_report(), sample_report()
    assert MultiReport.of([ok, ok_report("c@example.test")]).exit_code is ExitCode.OK
    mixed = MultiReport.of([ok, failing])
    assert (mixed.status, mixed.exit_code) == (Status.FAIL, ExitCode.FAIL)
    with pytest.raises(ValueError):
        MultiReport.of([])


@pytest.mark.parametrize(
    ("status", "fail_on", "code"),
    [
        ("ok", "fail", 0),
        ("skip", "fail", 0),
        ("warn", "fail", 1),
        ("fail", "fail", 2),
        ("ok", "warn", 0),
        ("skip", "warn", 0),
        ("warn", "warn", 2),
        ("fail", "warn", 2),
    ],
)
def test_exit_code_for(status: str, fail_on: str, code: int) -> None:
    from maildiag.report import exit_code_for

    assert exit_code_for(Status(status), fail_on) == code


def test_fail_on_changes_exit_code_only() -> None:
    from test_multi_fixtures import CERT_SOON, check, report, target

    from maildiag.report import apply_fail_on, exit_code_for

    with pytest.raises(ValueError, match="--fail-on must be one of warn, fail"):
        exit_code_for(Status.WARN, "error")
    imap = target("imap", "imap.example.test", 993)
    warn_only = report("w@example.test", [check("imap.tls", "warn", imap, findings=(CERT_SOON,))])
    assert (warn_only.status, warn_only.exit_code) == (Status.WARN, ExitCode.WARN)
    promoted = apply_fail_on(warn_only, "warn")
    assert (promoted.status, promoted.exit_code) == (Status.WARN, ExitCode.FAIL)
    assert promoted.to_json()["status"] == "warn" and promoted.to_json()["exit_code"] == 2
    multi = MultiReport.of([ok_report(), warn_only])
    assert multi.exit_code is ExitCode.WARN
    multi_promoted = apply_fail_on(multi, "warn")
    assert isinstance(multi_promoted, MultiReport)
    assert (multi_promoted.status, multi_promoted.exit_code) == (Status.WARN, ExitCode.FAIL)
    assert [r.exit_code for r in multi_promoted.reports] == [ExitCode.OK, ExitCode.FAIL]
    assert apply_fail_on(multi_promoted, "fail").exit_code is ExitCode.WARN


def test_check_targets_propagates_a_crash() -> None:
    def run_one(spec: TargetSpec) -> Report:
        if spec.index == 2:
            raise RuntimeError("engine bug")
        return ok_report(spec.address)

    with pytest.raises(RuntimeError, match="engine bug"):
        check_targets(specs(4), run_one, max_parallel=1)


def test_multi_json_shape() -> None:
    multi = MultiReport.of([sample_report(), ok_report()], duration_ms=10)
    doc = json.loads(json.dumps(multi.to_json()))
    assert doc["schema"] == MULTI_SCHEMA == "maildiag.multi/1"
    assert (doc["status"], doc["exit_code"]) == ("fail", 2)
    assert [r["schema"] for r in doc["reports"]] == ["maildiag.report/1"] * 2
    assert [r["address"] for r in doc["reports"]] == ["alice@example.test", "bob@example.test"]
    assert list(doc) == ["schema", "status", "exit_code", "reports"]
