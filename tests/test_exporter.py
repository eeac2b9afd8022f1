"""``maildiag exporter`` served on 127.0.0.1, scraped over HTTP, probing loopback mail peers.

Each test starts the real exporter (``commands.exporter.build`` + ``exporter.make_server``) on a
free port in a thread, asks it over HTTP as Prometheus would, and reads the answer with
prometheus_client's own parser. The peers are the suite's scripted IMAP server on implicit TLS
(trustme certificates) and closed or silent ports; a few tests swap the check itself for one
that blocks or raises, to reach the deadline, overload and internal-error answers.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from peers import LineServer, MailboxServerConfig, imap_handler
from prometheus_client.parser import text_string_to_metric_families

from maildiag.commands.exporter import build
from maildiag.exporter import Exporter, make_server
from maildiag.options import EXPORTER

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "Exporter-Secret-4417"
WRONG = "Wrong-Exporter-Secret-0912"
ENV = {"ALICE_PASSWORD": PASSWORD, "BOB_PASSWORD": WRONG}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Answer:
    status: int
    body: str
    content_type: str

    @property
    def series(self) -> Series:
        out: Series = {}
        for family in text_string_to_metric_families(self.body):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def value(self, family: str, /, **labels: str) -> float:
        """A series by its labels; ``name`` (the target's name) defaults to the ``address``."""
        if "address" in labels:
            labels.setdefault("name", labels["address"])
        return self.series[(family, frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _ in self.series}


@dataclass
class Running:
    url: str
    exporter: Exporter

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
        request = urllib.request.Request(self.url + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(
                    response.status, response.read().decode(), response.headers["Content-Type"]
                )
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read().decode(), exc.headers["Content-Type"])

    def probe(self, target: str, **extra: str) -> Answer:
        from urllib.parse import urlencode

        headers = {}
        if "timeout" in extra:
            headers["X-Prometheus-Scrape-Timeout-Seconds"] = extra.pop("timeout")
        return self.get("/probe?" + urlencode({"target": target, **extra}), headers)

    def own(self) -> Answer:
        return self.get("/metrics")


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(doc, **options)``: the exporter of targets file ``doc`` on 127.0.0.1, running."""
    servers: list[Any] = []

    def run(doc: dict[str, Any], env: dict[str, str] | None = None, **options: Any) -> Running:
        path = tmp_path / f"exporter-{len(servers)}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        raw = {"config": str(path), "listen": "127.0.0.1:0", **options}
        check = raw.pop("check", None)
        exporter, (host, port) = build(EXPORTER, EXPORTER.checked(raw), environ=env or ENV)
        if check is not None:
            exporter.check = check
        server = make_server(exporter, host, port)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return Running(f"http://127.0.0.1:{server.server_address[1]}", exporter)

    yield run
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def imaps(line_server: Callable[..., LineServer], certs: Any) -> LineServer:
    """IMAP on implicit TLS (trustme certificate); alice's password is PASSWORD."""
    cfg = MailboxServerConfig(users={ALICE: PASSWORD, BOB: PASSWORD})
    return line_server(imap_handler(cfg), tls=certs.valid)


def mailbox(address: str, port: int, certs: Any, **more: Any) -> dict[str, Any]:
    return {
        "address": address,
        "imap": f"127.0.0.1:{port}/ssl",
        "only": "imap",
        "ca_file": str(certs.ca_pem),
        **more,
    }


DEFAULTS = {"clock": False, "timeout": 5}


def fleet(imaps: LineServer, certs: Any, closed_port: int) -> dict[str, Any]:
    return {
        "defaults": DEFAULTS,
        "targets": [
            mailbox(ALICE, imaps.port, certs, name="alice", password_env="ALICE_PASSWORD"),
            mailbox(BOB, imaps.port, certs, password_env="BOB_PASSWORD"),
            {"address": "carol@example.test", "imap": f"127.0.0.1:{closed_port}/ssl"},
        ],
    }


# -- /probe of a target of the file ---------------------------------------------------------


def test_healthy_target_by_name(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    answer = running.probe("alice")
    assert answer.status == 200, answer.body
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    assert answer.value("maildiag_probe_success") == 1
    # every series names the target by its name in the file, as a --config report does
    assert answer.value("maildiag_run_status", address=ALICE, name="alice", status="ok") == 1
    imap = {
        "address": ALICE,
        "name": "alice",
        "service": "imap",
        "host": "127.0.0.1",
        "port": str(imaps.port),
    }
    for check in ("imap.connect", "imap.greeting", "imap.tls", "imap.capabilities", "imap.auth"):
        assert answer.value("maildiag_check_status", check=check, status="ok", **imap) == 1, check
        assert answer.value("maildiag_check_status", check=check, status="fail", **imap) == 0
        assert (
            "maildiag_check_duration_seconds",
            frozenset({"check": check, **imap}.items()),
        ) in (answer.series)
    # trustme's leaf is valid for years; the exporter's view of it is the textfile's
    assert answer.value("maildiag_cert_days_to_expiry", check="imap.tls", **imap) > 300
    assert "maildiag_findings" not in answer.names()
    assert answer.value("maildiag_probe_timeout_seconds") == 30  # probe_timeout: no header
    assert PASSWORD not in answer.body


def test_failing_login_and_closed_port(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    bob = running.probe(BOB)  # no name: the address names it
    assert bob.status == 200
    assert bob.value("maildiag_probe_success") == 0
    assert bob.value("maildiag_run_status", address=BOB, status="fail") == 1
    imap = {"address": BOB, "service": "imap", "host": "127.0.0.1", "port": str(imaps.port)}
    assert bob.value("maildiag_check_status", check="imap.auth", status="fail", **imap) == 1
    assert bob.value("maildiag_findings", address=BOB, category="auth_failed", severity="fail") == 1
    assert WRONG not in bob.body and PASSWORD not in bob.body

    carol = running.probe("carol@example.test")
    assert carol.value("maildiag_probe_success") == 0
    port = {"service": "imap", "host": "127.0.0.1", "port": str(closed_port)}
    labels = {"address": "carol@example.test", **port}
    assert carol.value("maildiag_check_status", check="imap.connect", status="fail", **labels) == 1
    assert (
        carol.value(
            "maildiag_findings",
            address="carol@example.test",
            category="connection_refused",
            severity="fail",
        )
        == 1
    )

    own = running.own()
    assert own.value("maildiag_exporter_probes_total", kind="target", result="failure") == 2
    assert own.value("maildiag_exporter_probe_duration_seconds_count", kind="target") == 2
    assert own.value("maildiag_exporter_probes_in_flight") == 0
    assert own.value("maildiag_exporter_targets") == 3


def test_openmetrics_when_prometheus_asks_for_it(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    answer = running.get("/probe?target=alice", {"Accept": accept})
    assert answer.status == 200
    assert answer.content_type.startswith("application/openmetrics-text")
    assert answer.body.endswith("# EOF\n")


# -- what cannot be probed: a status and one line --------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "line"),
    [
        ("/probe?target=nobody", 404, "unknown target 'nobody'"),
        ("/probe", 400, "no target: /probe?target=NAME"),
        ("/probe?target=", 400, "no target: /probe?target=NAME"),
        ("/probe?target=alice&target=bob", 400, "'target' given twice"),
        ("/probe?target=alice&password=x", 400, "unknown parameter 'password'"),
        ("/probe?target=mail.example.test&module=smtp", 403, "ad-hoc probes are off"),
        ("/nowhere", 404, "no such path '/nowhere'"),
    ],
)
def test_refusals_are_one_line(
    start: Start,
    imaps: LineServer,
    certs: Any,
    closed_port: int,
    path: str,
    status: int,
    line: str,
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    answer = running.get(path)
    assert answer.status == status
    assert answer.content_type == "text/plain; charset=utf-8"
    assert answer.body.startswith(line) and answer.body.count("\n") == 1, answer.body
    assert "Traceback" not in answer.body


def test_other_methods_and_hostile_text(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    assert running.get("/probe?target=alice", method="POST").status == 405
    hostile = running.get("/probe?target=%1b%5b31m%0d%0aSet-Cookie:x" + "y" * 500)
    assert hostile.status == 404
    assert "\x1b" not in hostile.body and hostile.body.count("\n") == 1
    assert len(hostile.body) < 200
    own = running.own()
    assert own.value("maildiag_exporter_refused_total", reason="unknown_target") == 1
    assert own.value("maildiag_exporter_refused_total", reason="bad_request") == 1


# -- time: the scrape's timeout, less the offset, capped -------------------------------------


def test_deadline_follows_the_scrape_timeout(
    start: Start, line_server: Callable[..., LineServer]
) -> None:
    silent = line_server(lambda peer: peer.readline(timeout=30))  # accepts, never greets
    doc = {
        "defaults": {**DEFAULTS, "timeout": 20},
        "targets": [{"address": ALICE, "imap": f"127.0.0.1:{silent.port}/plain"}],
    }
    running = start(doc, probe_timeout="2")
    answer = running.probe(ALICE, timeout="1.5")
    assert answer.status == 200
    assert answer.value("maildiag_probe_timeout_seconds") == 1.0  # 1.5 less the 0.5 offset
    assert answer.value("maildiag_probe_success") == 0
    labels = {"address": ALICE, "service": "imap", "host": "127.0.0.1", "port": str(silent.port)}
    assert answer.value("maildiag_check_status", check="imap.greeting", status="fail", **labels)
    assert answer.value(
        "maildiag_findings", address=ALICE, category="connection_timeout", severity="fail"
    )
    capped = running.probe(ALICE, timeout="3000")
    assert capped.value("maildiag_probe_timeout_seconds") == 2  # probe_timeout caps it

    for bad in ("soon", "0", "-1", "nan", "0.4"):
        refused = running.probe(ALICE, timeout=bad)
        assert refused.status == 400 and refused.body.count("\n") == 1, bad


def test_a_probe_past_its_limit_is_answered_and_keeps_its_slot(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck(*args: Any, **kw: Any) -> Any:
        entered.set()
        release.wait(30)
        raise RuntimeError("released")

    running = start(fleet(imaps, certs, closed_port), check=stuck, max_probes="1")
    answer = running.probe("alice", timeout="1.5")
    assert answer.status == 200
    assert answer.value("maildiag_probe_success") == 0
    assert "maildiag_run_status" not in answer.names()  # nothing made up
    own = running.own()
    assert own.value("maildiag_exporter_probe_errors_total", reason="deadline") == 1
    assert own.value("maildiag_exporter_probes_in_flight") == 1
    # the stuck probe still holds the only slot: the next scrape is refused, not queued
    busy = running.probe("alice")
    assert busy.status == 503
    assert busy.body == "1 probes are running already (max_probes)\n"
    assert running.own().value("maildiag_exporter_refused_total", reason="overload") == 1
    release.set()
    for _ in range(200):
        if running.own().value("maildiag_exporter_probes_in_flight") == 0:
            break
        threading.Event().wait(0.05)
    assert running.own().value("maildiag_exporter_probes_in_flight") == 0
    # the slot is free again (and this check, released, raises at once: a bug is one line)
    again = running.probe("carol@example.test")
    assert again.status == 500
    assert again.body == "internal error: RuntimeError: released\n"


def test_an_internal_error_never_shows_a_password(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    import base64

    def leaky(*args: Any, **kw: Any) -> Any:
        encoded = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        raise ValueError(f"cannot parse {PASSWORD!r} nor AUTH PLAIN {encoded}")

    logged: list[str] = []
    running = start(fleet(imaps, certs, closed_port), check=leaky)
    running.exporter.log = logged.append
    answer = running.probe("alice")
    assert answer.status == 500
    assert answer.body.startswith("internal error: ValueError: cannot parse")
    assert logged == [answer.body.rstrip("\n")]
    plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    for text in (answer.body, *logged):
        assert PASSWORD not in text and plain.rstrip("=") not in text
        assert text.count("********") == 2


# -- ad-hoc server probes ---------------------------------------------------------------------


def adhoc_doc(certs: Any, **exporter: Any) -> dict[str, Any]:
    return {
        "defaults": {**DEFAULTS, "password_env": "ALICE_PASSWORD", "ca_file": str(certs.ca_pem)},
        "modules": {"imaps": {"only": "imap", "timeout": 4}, "smtp": {"only": "smtp"}},
        "exporter": exporter,
    }


def test_adhoc_probe_of_a_server_with_a_module(start: Start, imaps: LineServer, certs: Any) -> None:
    running = start(adhoc_doc(certs, allow_adhoc=True))
    answer = running.probe(f"127.0.0.1:{imaps.port}", module="imaps")
    assert answer.status == 200, answer.body
    labels = {
        "address": f"127.0.0.1:{imaps.port}",
        "service": "imap",
        "host": "127.0.0.1",
        "port": str(imaps.port),
    }
    for check in ("imap.connect", "imap.greeting", "imap.tls", "imap.capabilities"):
        assert answer.value("maildiag_check_status", check=check, status="ok", **labels) == 1
    # a module never carries the defaults' password: a scrape chose this host
    assert answer.value("maildiag_check_status", check="imap.auth", status="skip", **labels) == 1
    assert not any(" LOGIN " in line or "AUTHENTICATE" in line for line in imaps.received)
    assert answer.value("maildiag_probe_success") == 1
    assert running.own().value("maildiag_exporter_probes_total", kind="adhoc", result="success")


@pytest.mark.parametrize(
    ("target", "module", "status", "line"),
    [
        ("127.0.0.1:993", "nope", 400, "unknown module 'nope' (modules: imaps, smtp)"),
        ("127.0.0.1:4321", "smtp", 200, None),  # `only: smtp` says which service
        ("[::1]:993", "imaps", 200, None),  # IPv6 too, as `maildiag check [::1]:993`
        ("alice@example.test", "imaps", 400, "target 'alice@example.test': a server probe names"),
        ("mail.example.test:99999", "imaps", 400, "target 'mail.example.test:99999': port must"),
        ("bad host:25", "smtp", 400, "target 'bad host:25': no host name"),
    ],
)
def test_adhoc_refusals(
    start: Start, certs: Any, target: str, module: str, status: int, line: str | None
) -> None:
    running = start(adhoc_doc(certs, allow_adhoc=True))
    answer = running.probe(target, module=module, timeout="2")
    assert answer.status == status, answer.body
    if line is not None:
        assert answer.body.startswith(line) and answer.body.count("\n") == 1, answer.body


def test_adhoc_port_needs_a_service(start: Start, certs: Any) -> None:
    doc = adhoc_doc(certs, allow_adhoc=True)
    doc["modules"]["any"] = {"timeout": 2}
    running = start(doc)
    answer = running.probe("127.0.0.1:4321", module="any")
    assert answer.status == 400
    assert "port 4321 is no standard mail port" in answer.body


def test_adhoc_off_unless_the_file_or_the_command_line_allows_it(
    start: Start, imaps: LineServer, certs: Any
) -> None:
    target = f"127.0.0.1:{imaps.port}"
    assert start(adhoc_doc(certs)).probe(target, module="imaps").status == 403
    assert start(adhoc_doc(certs, allow_adhoc=False)).probe(target, module="imaps").status == 403
    assert start(adhoc_doc(certs), allow_adhoc=True).probe(target, module="imaps").status == 200


# -- the per-host cap holds across probes -------------------------------------------------------


@pytest.mark.parametrize("per_host", [1, 2])
def test_per_host_cap_is_shared_by_all_probes(
    start: Start, line_server: Callable[..., LineServer], per_host: int
) -> None:
    lock = threading.Lock()
    seen = {"active": 0, "peak": 0}
    imap = imap_handler(MailboxServerConfig(users={}))

    def counting(peer: Any) -> None:
        with lock:
            seen["active"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
        try:
            threading.Event().wait(0.5)  # hold the connection, so that probes overlap
            imap(peer)
        finally:
            with lock:
                seen["active"] -= 1

    server = line_server(counting)
    doc = {
        "defaults": DEFAULTS,
        "targets": [
            {"address": a, "imap": f"127.0.0.1:{server.port}/plain"}
            for a in (ALICE, BOB, "carol@example.test")
        ],
    }
    running = start(doc, per_host=str(per_host))
    answers: list[Answer] = []
    threads = [
        threading.Thread(target=lambda a=a: answers.append(running.probe(a)))
        for a in (ALICE, BOB, "carol@example.test")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status for a in answers] == [200, 200, 200]
    assert server.connections >= 3
    assert seen["peak"] == per_host


# -- the command line ---------------------------------------------------------------------------


def write_doc(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return str(path)


def test_command_line_errors_are_one_line(tmp_path: Path, certs: Any) -> None:
    from conftest import run_cli

    doc = {"defaults": DEFAULTS, "targets": [mailbox(ALICE, 993, certs, password_env="NO_SUCH")]}
    config = write_doc(tmp_path, doc)
    cases = [
        (["--listen", "127.0.0.1:0"], "exporter needs --config FILE"),
        (["--config", config], "exporter needs --listen ADDR:PORT"),
        (["--listen", "9467", "--config", config], "--listen 9467: expected ADDR:PORT"),
        (["--listen", "::1:9467", "--config", config], "--listen ::1:9467: an IPv6 address"),
        (["--listen", "127.0.0.1:0", "--config", config, "--max-probes", "0"], "--max-probes 0"),
        (
            ["--listen", "127.0.0.1:0", "--config", config],
            f"{config}:5: target 1: --password-env NO_SUCH: that environment variable is not set",
        ),
    ]
    for args, line in cases:
        result = run_cli("exporter", *args)
        assert result.code == 3, (args, result)
        assert result.err.startswith(f"maildiag: {line}"), (args, result.err)
        assert result.err.count("\n") == 1 and result.out == ""


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    from conftest import run_cli

    config = write_doc(tmp_path, {"targets": [ALICE]})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("exporter", "--listen", f"127.0.0.1:{port}", "--config", config)
    assert result.code == 3
    assert (
        result.err
        == f"maildiag: cannot listen on http://127.0.0.1:{port}: Address already in use\n"
    )


def test_serves_until_sigterm(tmp_path: Path, imaps: LineServer, certs: Any) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    doc = {
        "defaults": DEFAULTS,
        "targets": [mailbox(ALICE, imaps.port, certs, password_env="ALICE_PASSWORD")],
        "exporter": {"listen": "127.0.0.1:0", "max_probes": 3},
    }
    env = {**os.environ, "ALICE_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maildiag", "exporter", "--config", write_doc(tmp_path, doc)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/probe", first)
        assert found, first
        running = Running(f"http://127.0.0.1:{found.group(1)}", None)  # type: ignore[arg-type]
        assert running.probe(ALICE).value("maildiag_probe_success") == 1
        assert running.own().value("maildiag_exporter_max_probes") == 3  # from the file
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "" and err == ""
    assert PASSWORD not in first


def test_tls_contexts_are_loaded_once_for_all_probes(
    start: Start, imaps: LineServer, certs: Any, closed_port: int
) -> None:
    running = start(fleet(imaps, certs, closed_port))
    made: list[str | None] = []
    real = running.exporter.tls.verify

    def counted(ca_file: str | None) -> Any:
        made.append(ca_file)
        return real(ca_file)

    running.exporter.tls.verify = counted  # type: ignore[method-assign]
    for target in ("alice", BOB, "alice"):
        assert running.probe(target).status == 200
    # every probe asked the shared contexts; certifi and the CA file were read once
    assert made == [str(certs.ca_pem)] * 3
    assert running.exporter.tls.verify(str(certs.ca_pem)) is running.exporter.tls.verify(
        str(certs.ca_pem)
    )
