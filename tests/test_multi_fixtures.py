"""Hand-built reports shared by the renderer and multi-target tests (no tests in this file).

Everything is constructed directly from maildiag.models, the way the engine would, so the
renderers are tested as pure functions of a Report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maildiag.models import (
    Category,
    CheckResult,
    ClockFacts,
    Discovery,
    Finding,
    Observation,
    Report,
    Security,
    Service,
    Severity,
    Source,
    Status,
    Summary,
    Target,
    TlsFacts,
    severity_rank,
    status_rank,
)
from maildiag.report import exit_code_for


def target(
    service: str = "smtp", host: str = "smtp.example.test", port: int = 465, security: str = "ssl"
) -> Target:
    return Target(Service(service), host, port, Security(security), Source.PROVIDER)


def finding(
    title: str,
    severity: str = "fail",
    category: str = "auth_failed",
    check: str = "smtp.auth",
    steps: tuple[str, ...] = ("Check the login.", "Check the password."),
    evidence: str = "",
    rule: str = "test.rule",
) -> Finding:
    return Finding(
        rule=rule,
        category=Category(category),
        severity=Severity(severity),
        title=title,
        steps=steps,
        check=check,
        evidence=evidence,
    )


def check(
    check_id: str,
    status: str = "ok",
    tgt: Target | None = None,
    summary: str = "fine",
    data: dict[str, Any] | None = None,
    findings: tuple[Finding, ...] = (),
    duration_ms: int = 10,
    transcript: tuple[str, ...] = (),
) -> CheckResult:
    data = data or {}
    obs = Observation(
        check=check_id,
        status=Status(status),
        summary=Summary("fixture"),
        target=tgt,
        data=data,
        transcript=transcript,
        duration_ms=duration_ms,
        facts=_facts(check_id, data),
    )
    return CheckResult(obs, Status(status), findings, summary)


def _facts(check_id: str, data: dict[str, Any]) -> TlsFacts | ClockFacts | None:
    """The typed facts a real check would carry beside ``data``."""
    if check_id.endswith(".tls") and "days_to_expiry" in data:
        return TlsFacts(
            checked_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            warn_days=data.get("warn_days", 21),
            crit_days=data.get("crit_days", 7),
            days_to_expiry=data["days_to_expiry"],
        )
    if check_id == "clock" and "offset_seconds" in data:
        return ClockFacts(
            data["offset_seconds"], "sntp:ntp.example.test:123", "2030-01-01T00:00:00"
        )
    return None


def report(
    address: str,
    checks: list[CheckResult],
    *,
    fail_on: str = "fail",
    duration_ms: int = 420,
    transcript: bool = False,
) -> Report:
    status = Status.OK
    for c in checks:
        if status_rank(c.status) > status_rank(status):
            status = c.status
    findings: dict[tuple[str, str], Finding] = {}
    for c in checks:
        for f in c.findings:
            findings.setdefault((f.rule, f.title), f)
    ordered = sorted(findings.values(), key=lambda f: -severity_rank(f.severity))
    servers = tuple(dict.fromkeys(c.observation.target for c in checks if c.observation.target))
    return Report(
        address=address,
        discovery=Discovery(Source.PROVIDER, "example"),
        servers=servers,
        checks=tuple(checks),
        findings=tuple(ordered),
        status=status,
        exit_code=exit_code_for(status, fail_on),
        duration_ms=duration_ms,
        transcript=transcript,
    )


AUTH_FAILED = finding(
    "The server refused the login and password",
    evidence="535 5.7.8 Error: authentication failed",
    steps=("Check the login name.", "Create an app password and use it."),
)
CERT_SOON = finding(
    "The server certificate expires soon",
    severity="warn",
    category="cert_expired",
    check="imap.tls",
    steps=("Renew the certificate.",),
    evidence="notAfter 2030-01-11",
)
AUTH_INFO = finding(
    "This server requires SMTP authentication",
    severity="info",
    category="auth_required",
    check="smtp.capabilities",
    steps=("Turn on SMTP authentication in your mail program.",),
)


def sample_report(address: str = "alice@example.test", fail_on: str = "fail") -> Report:
    """One failing check (smtp.auth), one warning (imap.tls), one skip, the rest ok."""
    smtp = target()
    imap = target("imap", "imap.example.test", 993)
    return report(
        address,
        [
            check("dns", summary="example.test has MX", duration_ms=12),
            check("clock", summary="clock within 0.3 s", data={"offset_seconds": 0.31}),
            check("smtp.connect", tgt=smtp, duration_ms=5),
            check(
                "smtp.tls",
                tgt=smtp,
                summary="TLS 1.3, certificate valid for 80 days",
                data={
                    "days_to_expiry": 80,
                    "not_after": "2030-03-21T00:00:00Z",
                    "warn_days": 21,
                    "crit_days": 7,
                },
                duration_ms=41,
            ),
            check("smtp.capabilities", tgt=smtp, findings=(AUTH_INFO,)),
            check(
                "smtp.auth", "fail", smtp, "login refused", findings=(AUTH_FAILED,), duration_ms=120
            ),
            check("imap.connect", tgt=imap),
            check(
                "imap.tls",
                "warn",
                imap,
                "TLS 1.2, certificate valid for 10 days",
                data={"days_to_expiry": 10, "not_after": "2030-01-11T00:00:00Z"},
                findings=(CERT_SOON,),
            ),
            check("imap.auth", "skip", imap, "no password given"),
        ],
        fail_on=fail_on,
    )


def ok_report(address: str = "bob@example.test") -> Report:
    smtp = target(host="smtp.example.org")
    return report(
        address,
        [
            check("dns"),
            check("smtp.connect", tgt=smtp),
            check("smtp.tls", tgt=smtp, data={"days_to_expiry": 200}),
            check("smtp.auth", "skip", smtp, "no password given"),
        ],
        duration_ms=100,
    )
