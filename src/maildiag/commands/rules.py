"""``maildiag rules lint [DIR]`` and ``maildiag rules test [DIR]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maildiag.options import Command


def main(command: Command, raw: Mapping[str, Any]) -> int:
    values = command.checked(raw)
    from maildiag import rules_cli

    dirs = [values["directory"]] if values.get("directory") else []
    return rules_cli.lint(dirs) if command.name == "rules lint" else rules_cli.test(dirs)
