"""The parts of a targets file the exporter reads: ``name``, ``modules`` and ``exporter``, all
validated with ``FILE:LINE`` messages like the rest of the file; and the server probe's
configuration (``exporter.server_config``)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from maildiag.errors import UsageError
from maildiag.exporter import server_config
from maildiag.models import Security, Service
from maildiag.targets import ConfigError, load_targets


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "targets.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def error_of(tmp_path: Path, text: str, *, exporter: bool = True) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_targets(path, exporter=exporter)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path + ":")
    return message[len(path) :]


def test_names_modules_and_exporter_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          timeout: 7
          password_env: MAIL_PASSWORD
          ca_file: ca.pem
        targets:
          - address: a@example.test
            name: primary
          - b@example.test
        modules:
          smtps: {only: smtp, warn_days: 30}
          plain.imap-1: {only: [imap], timeout: 2}
        exporter:
          listen: "[::1]:9467"
          allow_adhoc: true
          max_probes: 8
          per_host: 3
          probe_timeout: 12
          timeout_offset: 0
        """,
    )
    (tmp_path / "ca.pem").write_text(_ca_pem(tmp_path), encoding="utf-8")
    loaded = load_targets(path, exporter=True)
    assert [t.name for t in loaded.targets] == ["primary", "b@example.test"]
    smtps = loaded.modules["smtps"]
    # a module: its options over the defaults', without the defaults' password
    assert smtps["only"] == frozenset({Service.SMTP}) and smtps["warn_days"] == 30
    assert smtps["timeout"] == 7.0 and "password_env" not in smtps
    assert smtps["ca_file"] == str(tmp_path / "ca.pem")
    assert loaded.modules["plain.imap-1"]["timeout"] == 2.0
    assert loaded.serve == {
        "listen": ("::1", 9467),
        "allow_adhoc": True,
        "max_probes": 8,
        "per_host": 3,
        "probe_timeout": 12.0,
        "timeout_offset": 0.0,
    }
    # check --config reads the same file and leaves the exporter's parts alone
    assert [t.address for t in load_targets(path).targets] == ["a@example.test", "b@example.test"]


def _ca_pem(tmp_path: Path) -> str:
    import trustme

    return trustme.CA().cert_pem.bytes().decode()


def test_modules_alone_make_an_exporter_of_server_probes(tmp_path: Path) -> None:
    text = """
        modules:
          smtp: {only: smtp}
        exporter: {allow_adhoc: true}
        """
    loaded = load_targets(write(tmp_path, text), exporter=True)
    assert loaded.targets == () and set(loaded.modules) == {"smtp"}
    # check --config still needs targets
    assert "no 'targets' list" in error_of(tmp_path, text, exporter=False)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "targets: [a@example.test]\nmodules:\n  m: {password_env: X}\n",
            ":3: 'password_env' is not accepted in module 'm': a scrape names the host",
        ),
        (
            "targets: [a@example.test]\nmodules:\n  m: {smtp: 'mail.example.test:465'}\n",
            ":3: 'smtp' cannot be in module 'm': it belongs in a target",
        ),
        (
            "targets: [a@example.test]\nmodules:\n  m: {timout: 3}\n",
            ":3: unknown key 'timout' in module 'm' (did you mean 'timeout'?)",
        ),
        (
            "targets: [a@example.test]\nmodules:\n  'a b': {}\n",
            ":3: module name 'a b': use letters, digits, '_', '-' and '.' only",
        ),
        (
            "targets: [a@example.test]\nmodules:\n  m: {warn_days: 3, crit_days: 9}\n",
            ":3: module 'm': 'crit_days' (9) cannot exceed 'warn_days' (3)",
        ),
        (
            "targets: [a@example.test]\nmodules: [smtp]\n",
            ":2: modules must be a mapping of options, not a list",
        ),
        (
            "targets: [a@example.test]\nexporter: {allow_adhoc: yes please}\n",
            ":2: 'allow_adhoc' in exporter: must be true or false",
        ),
        (
            "targets: [a@example.test]\nexporter: {listen: 9467}\n",
            ":2: 'listen' in exporter: expected ADDR:PORT",
        ),
        (
            "targets: [a@example.test]\nexporter: {max_probe: 3}\n",
            ":2: unknown key 'max_probe' in exporter (did you mean 'max_probes'?)",
        ),
        (
            "targets:\n  - {address: a@example.test, name: x}\n  - {address: b@example.test, "
            "name: x}\n",
            ":3: target 2 has the same name 'x' as target 1: give it another 'name'",
        ),
        (
            "targets:\n  - {address: a@example.test, name: b@example.test}\n  - b@example.test\n",
            ":3: target 2 has the same name 'b@example.test' as target 1",
        ),
        (
            "targets:\n  - {address: a@example.test, name: ''}\n",
            ":2: 'name' in target 1: must be a non-empty text",
        ),
        (
            'targets:\n  - {address: a@example.test, name: "a\\tb"}\n',
            ":2: 'name' in target 1: must be one line of text",
        ),
        ("exporter: {allow_adhoc: true}\n", ":1: no 'targets' list"),
    ],
)
def test_bad_exporter_parts(tmp_path: Path, body: str, expected: str) -> None:
    assert error_of(tmp_path, body).startswith(expected)


def test_the_exporter_takes_a_fleet(tmp_path: Path) -> None:
    body = "targets:\n" + "".join(f"  - user{i}@example.test\n" for i in range(600))
    assert len(load_targets(write(tmp_path, body), exporter=True).targets) == 600
    assert "too many targets (600; at most 500)" in error_of(tmp_path, body, exporter=False)


# -- the server probe's configuration -----------------------------------------------------


def servers(target: str, **values: Any) -> list[tuple[str, str, int, str]]:
    config = server_config(target, values)
    assert config.password is None
    return [(str(t.service), t.host, t.port, str(t.security)) for t in config.explicit]


def test_a_server_probe_is_a_server_check() -> None:
    """``target=`` is what ``maildiag check HOST[:PORT][/MODE]`` takes, checked the same way."""
    assert servers("mail.example.test", only=frozenset({Service.IMAP})) == [
        ("imap", "mail.example.test", 993, "ssl"),
        ("imap", "mail.example.test", 143, "starttls"),
    ]
    assert len(servers("mail.example.test")) == 7  # every standard port of every service
    config = server_config("mail.example.test", {})
    assert config.server and config.address == "mail.example.test"
    assert not config.alternatives and config.oauth2_token is None


def test_a_port_says_its_service_and_mode() -> None:
    assert servers("mx.example.test:25") == [("smtp", "mx.example.test", 25, "starttls")]
    assert servers("10.0.0.1:143") == [("imap", "10.0.0.1", 143, str(Security.STARTTLS))]
    assert servers("10.0.0.1:2526/ssl", only=frozenset({Service.SMTP})) == [
        ("smtp", "10.0.0.1", 2526, "ssl")
    ]
    with pytest.raises(UsageError, match="port 2526 is no standard mail port"):
        server_config("127.0.0.1:2526", {})
    with pytest.raises(UsageError, match="port 993 is imap's, and --only leaves imap out"):
        server_config("127.0.0.1:993", {"only": frozenset({Service.SMTP, Service.POP3})})
    with pytest.raises(UsageError, match="a server probe names a server"):
        server_config("alice@example.test", {})
