"""The wheel carries its rules: built, installed into a fresh venv, run from another directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel installed; third-party deps borrowed from this venv."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((work / "dist").glob("maildiag-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("maildiag/rules/") and n.endswith(".yaml") for n in names)
    assert any(n.startswith("maildiag/rules/providers/") for n in names)
    for shipped in ("ispdb.json", "LICENSE", "README.md"):  # the ISPDB, its licence and source
        assert f"maildiag/rules/providers/ispdb/{shipped}" in names, shipped
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # Dependencies (dnspython, PyYAML, ...) come from the test venv's site-packages; the
    # editable maildiag there is not seen, because a path line in a .pth does not run that
    # directory's own .pth hooks.
    target = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    Path(target.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(venv / "bin" / "maildiag"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_installed_wheel_runs_from_another_directory(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("maildiag ")
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import maildiag; print(maildiag.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(installed) in where.stdout, "the wheel's package, not the source tree, is used"


def test_installed_wheel_explains_with_its_rules(installed: Path, tmp_path: Path) -> None:
    result = run(
        installed,
        "explain",
        "--json",
        "535 5.7.8 Error: authentication failed: Invalid user or password",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert findings and findings[0]["category"] == "auth_failed"


def test_installed_wheel_answers_an_ispdb_domain_offline(installed: Path, tmp_path: Path) -> None:
    # 126.com is in Thunderbird's ISPDB only; a resolver nobody listens on: no network needed
    result = run(
        installed, "settings", "x@126.com", "--json", "--resolver", "127.0.0.1:9", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["discovery"] == {"source": "provider", "provider": "ispdb:126.com"}
    assert doc["provider_origin"] == "ispdb"


def test_installed_wheel_checks_a_local_peer(
    installed: Path, tmp_path: Path, smtp_server: Callable[..., Any], certs: Any
) -> None:
    server = smtp_server("ssl")
    result = run(
        installed,
        "check",
        "alice@example.test",
        "--smtp",
        f"127.0.0.1:{server.port}/ssl",
        "--only",
        "smtp",
        "--ca-file",
        str(certs.ca_pem),
        "--no-clock",
        "--timeout",
        "5",
        "--json",
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    assert report["schema"] == "maildiag.report/1"
    tls = next(c for c in report["checks"] if c["id"] == "smtp.tls")
    assert tls["status"] == "ok"
    assert result.returncode in (0, 1)
