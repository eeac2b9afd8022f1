"""The fixed cost of a check (issue 17): what a healthy run imports and loads, how it exits, and
the fast paths' answers being the same as the slow ones'. Speed itself is measured in bench/
(bench_peers.py, profile_check.py); these tests pin what makes it, never a time."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import Certs, LineServer

# a check with every server an IP address needs none of these
HEAVY = ("dns",)


def run_python(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


# -- the process ends without finalization --------------------------------------------------------

EXIT_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('finalized\\n'))\n"
    "sys.argv = ['maildiag', *sys.argv[1:]]\n"
    "from maildiag.__main__ import run\n"
    "run()\n"
)


def test_console_entry_exits_without_finalization(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, "maildiag 0.1.0\n", "")


def test_console_entry_keeps_the_exit_code_and_flushes_both_streams(tmp_path: Path) -> None:
    p = run_python(EXIT_PROBE, tmp_path, "check")
    assert p.returncode == 3
    assert p.stderr.startswith("maildiag: Missing argument") and "finalized" not in p.stderr
    p = run_python(EXIT_PROBE, tmp_path, "explain", "--json", "535 5.7.8 authentication failed")
    assert p.returncode == 0 and "finalized" not in p.stderr
    assert json.loads(p.stdout)["findings"][0]["category"] == "auth_failed"


def test_console_script_is_the_fast_entry() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["maildiag"] == "maildiag.__main__:run"


# -- a healthy whole-mailbox check imports only what it uses --------------------------------------

CHECK_PROBE = (
    "import sys\n"
    "from maildiag.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "heavy = [m for m in {heavy!r} if m in sys.modules]\n"
    "sys.stderr.write(repr((rc, heavy)))\n"
)


@pytest.fixture
def mailbox(
    smtp_server: Callable[..., Any],
    imap_server: Callable[..., LineServer],
    pop3_server: Callable[..., LineServer],
    certs: Certs,
) -> list[str]:
    """SMTP with STARTTLS, IMAP and POP3 with implicit TLS: the benchmark's whole mailbox."""
    smtp = smtp_server("starttls")
    imap = imap_server(implicit_tls=True)
    pop = pop3_server(implicit_tls=True)
    return [
        "check",
        "alice@example.test",
        "--smtp",
        f"127.0.0.1:{smtp.port}/starttls",
        "--imap",
        f"127.0.0.1:{imap.port}/ssl",
        "--pop3",
        f"127.0.0.1:{pop.port}/ssl",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
    ]


def test_healthy_check_imports_no_resolver(mailbox: list[str], tmp_path: Path) -> None:
    code = CHECK_PROBE.format(heavy=HEAVY)
    for fmt in ("nagios", "json"):
        p = run_python(code, tmp_path, *mailbox, "--format", fmt)
        assert p.stderr.endswith(repr((0, []))), p.stderr
    report = json.loads(p.stdout)
    tls = [c for c in report["checks"] if c["id"].endswith(".tls")]
    assert [c["status"] for c in tls] == ["ok", "ok", "ok"]
    assert all(c["data"]["sans"] == ["localhost", "mail.example.test", "127.0.0.1"] for c in tls)


def test_resolver_option_alone_imports_no_resolver(mailbox: list[str], tmp_path: Path) -> None:
    # every server an IP address: --resolver is never asked, so dnspython is never loaded
    from dnsserver import SilentResolver

    with SilentResolver() as silent:
        p = run_python(
            CHECK_PROBE.format(heavy=("dns",)),
            tmp_path,
            *mailbox,
            "--resolver",
            silent.address,
            "--format",
            "json",
        )
    assert p.stderr.endswith(repr((0, []))), p.stderr
    assert json.loads(p.stdout)["status"] == "ok"


# -- the system resolver first, dnspython to tell why -------------------------------------------


def test_names_resolve_through_the_system_without_dnspython(
    smtp_server: Callable[..., Any], certs: Certs, tmp_path: Path
) -> None:
    # "localhost" is in /etc/hosts, which the system resolver reads and a DNS query does not
    smtp = smtp_server("starttls")
    args = ["check", "alice@example.test", "--only", "smtp", "--smtp",
            f"localhost:{smtp.port}/starttls", "--ca-file", str(certs.ca_pem), "--no-clock",
            "--timeout", "5", "--format", "json"]  # fmt: skip
    p = run_python(CHECK_PROBE.format(heavy=("dns",)), tmp_path, *args)
    assert p.stderr.endswith(repr((0, []))), p.stderr
    checks = {c["id"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["dns"]["status"] == "ok"
    assert all(ipaddress.ip_address(a).is_loopback
               for a in checks["dns"]["data"]["addresses"]["localhost"])  # fmt: skip
    assert checks["smtp.connect"]["status"] == "ok"


def test_what_the_system_cannot_resolve_is_asked_of_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver
    from dnsserver import DnsServer

    from maildiag import dnsclient

    monkeypatch.setattr(dnsclient, "_system_addresses", lambda host, wait: [])
    with DnsServer({"mail.example.test": {"A": ["127.0.0.7"]}}) as server:
        ip, port = dnsclient.parse_server(server.address)

        def loopback(self: dnsclient.Dns) -> Any:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers, resolver.port = [ip], port
            return resolver

        monkeypatch.setattr(dnsclient.Dns, "_build_resolver", loopback)
        d = dnsclient.Dns(None, timeout=2)
        assert d.addresses("mail.example.test") == ["127.0.0.7"]
        with pytest.raises(dnsclient.DnsError) as exc:
            d.addresses("gone.example.test")
        assert exc.value.kind == "nxdomain"


def test_system_resolver_label_reads_resolv_conf(tmp_path: Path) -> None:
    from maildiag.dnsclient import _system_nameservers

    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.test\nnameserver 192.0.2.53\n; x\nnameserver ::1\n")
    assert _system_nameservers(str(conf)) == ["192.0.2.53", "::1"]
    assert _system_nameservers(str(tmp_path / "missing")) == []
