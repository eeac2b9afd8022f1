"""Real ``maildiag check`` runs on loopback with the real mail ports, for issue 15's closing note:

    alternatives  465 refuses, 587 works: "Settings that work", "recommended", the login on 587
    mx            a domain that publishes only an MX record whose host serves IMAP: the whole check
    ipv6          a name with an IPv6 address that drops connections and an IPv4 one that works,
                  with the run's wall time against --timeout
    blocked       every mail port of a host dropped while its port 443 answers
    down          every mail port and port 443 of a host dropped
    server        a server checked without a mailbox, in text, JSON and nagios

    sudo .venv/bin/python bench/show_settings.py [SCENARIO ...] [--json]

Root is needed for the ports below 1024 (25, 110, 143, 443, 465, 587, 993, 995), which the
servers open on 127.0.0.2 to 127.0.0.6 and ::1 (port 993), so they must be free there. A DNS
server on 127.0.0.1 names the hosts; a trustme CA (``--ca-file``) signs their certificates;
``--no-clock`` keeps the runs off the public NTP pool: nothing leaves the machine. Each run is
the real command in a child process; its output, exit code and wall time are printed.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dnsserver import DnsServer  # noqa: E402
from peers import FilteredPort, LineServer, MailboxServerConfig, imap_handler  # noqa: E402

PASSWORD = "demo-password"
MAIL, MX, DUAL, BLOCKED, DOWN = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"
ZONE = {
    "mail.example.test": {"A": [MAIL]},
    "small.test": {"MX": ["10 mx.small.test."]},
    "mx.small.test": {"A": [MX]},
    "dual.example.test": {"A": [DUAL], "AAAA": ["::1"]},
    "blocked.example.test": {"A": [BLOCKED]},
    "down.example.test": {"A": [DOWN]},
}
SCENARIOS = ("alternatives", "mx", "ipv6", "blocked", "down", "server")


class Lab:
    """The servers and the DNS of every scenario, started once."""

    def __init__(self, workdir: Path) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Sink
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ca = trustme.CA()
        self.ca_pem = workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_pem))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*(name for name in ZONE if name != "small.test")).configure_cert(ctx)
        self.closers: list[Any] = []

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and data.password.decode() == PASSWORD
            return AuthResult(success=ok, handled=False, auth_data=data)

        submission = Controller(
            Sink(),
            hostname=MAIL,
            port=587,
            tls_context=ctx,
            authenticator=check,
            auth_require_tls=True,
        )
        submission.start()
        self.closers.append(submission.stop)
        users = {"alice@example.test": PASSWORD, "bob@small.test": PASSWORD}
        for host in (MAIL, MX, DUAL):
            imap = LineServer(
                imap_handler(MailboxServerConfig(users)), tls=ctx, host=host, port=993
            )
            self.closers.append(imap.close)
        self.dropped = [FilteredPort("::1", 993)]
        self.dropped += [FilteredPort(h, p) for h in (BLOCKED, DOWN) for p in (465, 587)]
        self.dropped.append(FilteredPort(DOWN, 443))
        web = LineServer(lambda peer: None, host=BLOCKED, port=443)
        self.closers += [web.close, *(p.close for p in self.dropped)]
        self.dns = DnsServer(ZONE).start()
        self.closers.append(self.dns.stop)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def run(lab: Lab, args: list[str], *, env: dict[str, str] | None = None) -> None:
    args = [*args, "--resolver", lab.dns.address, "--ca-file", str(lab.ca_pem), "--no-clock"]
    shown = " ".join(args).replace(str(lab.ca_pem), "ca.pem")
    prefix = "MAIL_PASSWORD=... " if env else ""
    print(f"$ {prefix}maildiag {shown}", flush=True)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "maildiag", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100", **(env or {})},
        timeout=300,
    )
    wall = time.monotonic() - started
    print(done.stdout.rstrip() + done.stderr.rstrip())
    print(f"# exit code {done.returncode}, wall {wall:.2f} s\n", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--json", action="store_true", help="also run each one with --json")
    opts = parser.parse_args()
    unknown = [name for name in opts.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})")
    scenarios = opts.scenarios or list(SCENARIOS)
    import logging
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # aiosmtpd's own, in this process
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if os.geteuid() != 0:
        print("show_settings: needs root for the mail ports below 1024", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp))
        password = {"MAIL_PASSWORD": PASSWORD}
        runs: dict[str, list[tuple[list[str], dict[str, str] | None]]] = {
            "alternatives": [
                (
                    ["check", "alice@example.test", "--smtp", "mail.example.test:465"]
                    + ["--password-env", "MAIL_PASSWORD"],
                    password,
                )
            ],
            "mx": [(["check", "bob@small.test"], None)],
            "ipv6": [
                (["check", "carol@example.test", "--imap", "dual.example.test:993"], None),
            ],
            "blocked": [
                (["check", "dave@example.test", "--smtp", "blocked.example.test:465"], None)
            ],
            "down": [(["check", "erin@example.test", "--smtp", "down.example.test:465"], None)],
            "server": [(["check", "mail.example.test"], None)],
        }
        timeouts = {"ipv6": "5", "blocked": "3", "down": "3"}
        try:
            for name in scenarios:
                print(f"## {name}\n")
                for args, env in runs[name]:
                    if name in timeouts:
                        args = [*args, "--timeout", timeouts[name]]
                    run(lab, args, env=env)
                    if opts.json:
                        run(lab, [*args, "--json"], env=env)
                    if name == "server":
                        run(lab, [*args, "--format", "nagios"], env=env)
        finally:
            lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
