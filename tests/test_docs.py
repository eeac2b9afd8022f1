"""docs/reference.md is the product's reference: its generated tables match the declarations,
and everything a user can type or read back is documented there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from maildiag.errors import ExitCode
from maildiag.models import Category, Source
from maildiag.options import COMMANDS
from maildiag.probes import CHECKS

REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")


def test_generated_tables_match_the_declarations() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_option_in_help_is_documented(command: str) -> None:
    help_text = run_cli(*command.split(), "--help").out
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text)) - {"--help"}
    missing = sorted(f for f in flags if f"`{f}`" not in REFERENCE)
    assert not missing, f"options of {command} not in docs/reference.md: {missing}"


def test_the_vocabularies_are_documented() -> None:
    for category in Category:
        assert f"| `{category}` |" in REFERENCE, category
    for code in ExitCode:
        assert f"| {int(code)} |" in REFERENCE, code
    for source in Source:
        assert f"`{source}`" in REFERENCE, source
    for spec in CHECKS:
        assert f"`{spec.name}`" in REFERENCE or f"`<svc>.{spec.name}`" in REFERENCE, spec.name
    for schema in ("maildiag.report/1", "maildiag.multi/1", "maildiag.explain/1"):
        assert f"`{schema}`" in REFERENCE, schema
    assert "`maildiag.settings/1`" in REFERENCE


def test_the_readme_points_to_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/reference.md" in readme
    assert Path(ROOT / "docs" / "reference.md").is_file()
