"""The session against real loopback peers: every mode, every certificate, every failure path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import english
from peers import Certs, LineServer, PeerConn

from maildiag.config import RunConfig
from maildiag.models import Observation, Security, Service, Status, Target
from maildiag.probes.session import Env, Session
from maildiag.scheduler import Job, Scheduler


def run_session(target: Target, ca: str, timeout: float = 3.0) -> dict[str, Observation]:
    seen: list[Observation] = []
    Session(
        target, Env(RunConfig("a@example.test", ca_file=ca, timeout=timeout), seen.append)
    ).probe()
    by_id = {o.check: o for o in seen}
    assert len(by_id) == len(seen), "every check id is emitted exactly once"
    return by_id


def signals(obs: Observation) -> list[str]:
    return [p.signal for p in obs.problems]


def smtp(port: int, security: Security) -> Target:
    return Target(Service.SMTP, "127.0.0.1", port, security)


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_smtp_healthy(smtp_server: Callable[..., Any], certs: Certs, mode: str) -> None:
    server = smtp_server(mode)
    obs = run_session(smtp(server.port, Security(mode)), str(certs.ca_pem))
    for check in ("connect", "greeting", "tls", "capabilities"):
        assert obs[f"smtp.{check}"].status is Status.OK, obs[f"smtp.{check}"]
    tls = obs["smtp.tls"].data
    assert tls["version"].startswith("TLSv1.")
    assert tls["days_to_expiry"] > 21 and tls["issuer"]
    caps = obs["smtp.capabilities"].data
    assert caps["smtputf8"] is True and caps["size"] is not None
    if mode == "starttls":
        assert caps["before_tls"]["starttls"] is True


def test_smtp_plain_mode_skips_tls(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("plain")
    obs = run_session(smtp(server.port, Security.PLAIN), str(certs.ca_pem))
    assert obs["smtp.greeting"].status is Status.OK
    assert obs["smtp.tls"].status is Status.SKIP
    assert obs["smtp.capabilities"].status is Status.OK


def test_starttls_port_without_starttls_fails(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    server = smtp_server("plain")
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem))
    assert obs["smtp.tls"].status is Status.FAIL
    assert signals(obs["smtp.tls"]) == ["starttls.not_offered"]


def test_refused_port_skips_the_rest(closed_port: int, certs: Certs) -> None:
    obs = run_session(smtp(closed_port, Security.SSL), str(certs.ca_pem))
    assert obs["smtp.connect"].status is Status.FAIL
    assert signals(obs["smtp.connect"]) == ["connect.refused"]
    for check in ("greeting", "tls", "capabilities", "auth", "sender"):
        assert obs[f"smtp.{check}"].status is Status.SKIP
        assert "not reachable" in english(obs[f"smtp.{check}"])


def test_silent_server_is_tried_as_tls_then_called_silent(
    line_server: Callable[..., LineServer], certs: Certs
) -> None:
    def silent(peer: PeerConn) -> None:
        peer.readline(timeout=10)

    server = line_server(silent)
    start = time.monotonic()
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem), timeout=1.0)
    assert obs["smtp.greeting"].status is Status.FAIL
    assert signals(obs["smtp.greeting"]) == ["greeting.silent"]
    assert server.connections >= 2, "the other mode (TLS) was tried before calling it silent"
    assert time.monotonic() - start < 6


@pytest.mark.parametrize(
    "which,signal",
    [
        ("expired", "tls.cert_expired"),
        ("wrong_host", "tls.hostname_mismatch"),
        ("self_signed", "tls.cert_untrusted"),
        ("not_yet_valid", "tls.cert_not_yet_valid"),
    ],
)
@pytest.mark.parametrize("mode", ["ssl", "starttls"])
def test_bad_certificates(
    smtp_server: Callable[..., Any], certs: Certs, which: str, signal: str, mode: str
) -> None:
    server = smtp_server(mode, tls=getattr(certs, which))
    obs = run_session(smtp(server.port, Security(mode)), str(certs.ca_pem))
    tls = obs["smtp.tls"]
    assert tls.status is Status.FAIL
    assert signals(tls) == [signal]
    assert tls.data["verify_code"] is not None and tls.data["verify_message"]
    assert tls.data["subject"], "the bad chain was still fetched and described"
    # the session carried on unverified, so the user still learns the capabilities
    assert obs["smtp.capabilities"].status is Status.OK


def test_expiring_certificate_warns_then_fails(
    smtp_server: Callable[..., Any], certs: Certs
) -> None:
    warn = smtp_server("ssl", tls=certs.expiring(10))
    crit = smtp_server("ssl", tls=certs.expiring(3))
    ok = smtp_server("ssl", tls=certs.expiring(40))
    assert (
        run_session(smtp(warn.port, Security.SSL), str(certs.ca_pem))["smtp.tls"].status
        is Status.WARN
    )
    assert (
        run_session(smtp(crit.port, Security.SSL), str(certs.ca_pem))["smtp.tls"].status
        is Status.FAIL
    )
    assert (
        run_session(smtp(ok.port, Security.SSL), str(certs.ca_pem))["smtp.tls"].status is Status.OK
    )


def test_ssl_expected_on_starttls_port(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("starttls")
    obs = run_session(smtp(server.port, Security.SSL), str(certs.ca_pem))
    greeting = obs["smtp.greeting"]
    assert greeting.status is Status.FAIL
    assert signals(greeting) == ["mode.ssl_expected_plain"]
    assert greeting.problems[0].params["actual"] == "starttls"
    assert obs["smtp.tls"].status is Status.OK, "carried on in the mode the port really speaks"


def test_starttls_expected_on_ssl_port(smtp_server: Callable[..., Any], certs: Certs) -> None:
    server = smtp_server("ssl")
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem), timeout=2)
    greeting = obs["smtp.greeting"]
    assert signals(greeting) == ["mode.plain_expected_ssl"]
    assert greeting.problems[0].params == {
        **greeting.problems[0].params,
        "actual": "ssl",
        "suggested_port": 465,
    }


@pytest.mark.parametrize("mode,detected", [("ssl", "ssl"), ("starttls", "starttls")])
def test_unknown_port_mode_is_detected(
    smtp_server: Callable[..., Any], certs: Certs, mode: str, detected: str
) -> None:
    server = smtp_server(mode)
    obs = run_session(smtp(server.port, Security.AUTO), str(certs.ca_pem), timeout=2)
    assert obs["smtp.greeting"].status is Status.OK
    assert obs["smtp.greeting"].data["mode"] == detected
    assert obs["smtp.tls"].status is Status.OK


def test_wrong_protocol_greeting(line_server: Callable[..., LineServer], certs: Certs) -> None:
    def imap_on_smtp_port(peer: PeerConn) -> None:
        peer.send("* OK [CAPABILITY IMAP4rev1] Dovecot ready.")
        peer.readline(timeout=3)

    server = line_server(imap_on_smtp_port)
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem))
    assert signals(obs["smtp.greeting"]) == ["greeting.wrong_protocol"]
    assert obs["smtp.greeting"].problems[0].params["heard"] == "imap"


def test_refusing_greeting(line_server: Callable[..., LineServer], certs: Certs) -> None:
    def busy(peer: PeerConn) -> None:
        peer.send("554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")

    server = line_server(busy)
    obs = run_session(smtp(server.port, Security.STARTTLS), str(certs.ca_pem))
    assert signals(obs["smtp.greeting"]) == ["greeting.rejected"]
    assert "spamhaus" in obs["smtp.greeting"].problems[0].text


@pytest.mark.parametrize("implicit", [False, True])
def test_imap_healthy(imap_server: Callable[..., LineServer], certs: Certs, implicit: bool) -> None:
    server = imap_server(implicit_tls=implicit, starttls=None if implicit else certs.valid)
    target = Target(
        Service.IMAP, "127.0.0.1", server.port, Security.SSL if implicit else Security.STARTTLS
    )
    obs = run_session(target, str(certs.ca_pem))
    for check in ("connect", "greeting", "tls", "capabilities"):
        assert obs[f"imap.{check}"].status is Status.OK, obs[f"imap.{check}"]
    assert obs["imap.capabilities"].data["auth"] == ["PLAIN"]
    assert "imap.sender" not in obs


@pytest.mark.parametrize("implicit", [False, True])
def test_pop3_healthy(pop3_server: Callable[..., LineServer], certs: Certs, implicit: bool) -> None:
    server = pop3_server(implicit_tls=implicit, starttls=None if implicit else certs.valid)
    target = Target(
        Service.POP3, "127.0.0.1", server.port, Security.SSL if implicit else Security.STARTTLS
    )
    obs = run_session(target, str(certs.ca_pem))
    for check in ("connect", "greeting", "tls", "capabilities"):
        assert obs[f"pop3.{check}"].status is Status.OK, obs[f"pop3.{check}"]
    assert obs["pop3.capabilities"].data["auth"] == ["PLAIN"]
    assert implicit or "STLS" in obs["pop3.capabilities"].data["before_tls"]["keywords"]


def test_session_never_sends_mailbox_commands(
    imap_server: Callable[..., LineServer], pop3_server: Callable[..., LineServer], certs: Certs
) -> None:
    imap = imap_server(starttls=certs.valid)
    pop = pop3_server(starttls=certs.valid)
    run_session(Target(Service.IMAP, "127.0.0.1", imap.port, Security.STARTTLS), str(certs.ca_pem))
    run_session(Target(Service.POP3, "127.0.0.1", pop.port, Security.STARTTLS), str(certs.ca_pem))
    sent = " ".join(imap.received + pop.received).upper()
    for verb in ("SELECT", "STORE", "EXPUNGE", "APPEND", "RETR", "DELE"):
        assert verb not in sent


def test_scheduler_reports_a_crashing_job_and_a_stuck_job() -> None:
    def crash(emit: Callable[[Observation], None]) -> None:
        raise RuntimeError("boom")

    def stuck(emit: Callable[[Observation], None]) -> None:
        time.sleep(5)

    target = Target(Service.SMTP, "127.0.0.1", 1, Security.SSL)
    jobs = [
        Job("crash", ("clock",), crash),
        Job("stuck", ("smtp.connect", "smtp.greeting"), stuck, host="h", target=target),
    ]
    start = time.monotonic()
    scheduler = Scheduler()
    scheduler.start(jobs)
    seen = scheduler.collect(0.5)
    assert time.monotonic() - start < 2
    by = {o.check: o for o in seen}
    assert by["clock"].status is Status.FAIL and "boom" in english(by["clock"])
    assert [p.signal for p in by["clock"].problems] == ["check.internal_error"]
    assert by["smtp.connect"].status is Status.FAIL and "deadline" in english(by["smtp.connect"])
    assert by["smtp.greeting"].status is Status.SKIP


def test_a_bug_in_a_probe_becomes_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, smtp_server: Callable[..., Any], certs: Certs
) -> None:
    from maildiag.probes import smtp as smtp_mod

    def broken(self: Any, conn: Any, greeting: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(smtp_mod.Smtp, "capabilities", broken)
    server = smtp_server("ssl")
    obs = run_session(smtp(server.port, Security.SSL), str(certs.ca_pem))
    caps = obs["smtp.capabilities"]
    assert caps.status is Status.FAIL and "internal error" in english(caps)
    assert signals(caps) == ["check.internal_error"]
    assert obs["smtp.auth"].status is Status.SKIP


def test_a_refusing_greeting_is_read_for_what_it_says(
    line_server: Callable[..., LineServer], certs: Certs
) -> None:
    from conftest import run_cli

    def blocked(peer: PeerConn) -> None:
        peer.send(
            "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org"
        )

    server = line_server(blocked)
    result = run_cli(
        "check",
        "a@example.test",
        "--smtp",
        f"127.0.0.1:{server.port}/starttls",
        "--only",
        "smtp",
        "--no-clock",
        "--json",
    )
    finding = next(f for f in result.json["findings"] if f["check"] == "smtp.greeting")
    # the blocklist rule that reads the words, not the generic "a 5xx greeting" rule
    assert (finding["rule"], finding["category"]) == ("delivery.ip-blocklisted", "ip_blocklisted")
