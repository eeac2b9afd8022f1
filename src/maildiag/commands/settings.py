"""``maildiag settings``: the table a person copies into their mail program."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maildiag.errors import UsageError
from maildiag.options import Command


def main(command: Command, raw: Mapping[str, Any]) -> int:
    values = command.checked(raw)
    from maildiag.settings_cli import run_settings

    if not values.get("address"):
        raise UsageError("Missing argument 'ADDRESS'")
    return run_settings(
        values["address"],
        as_json=bool(values.get("json")),
        lang=values.get("lang"),
        resolver=values.get("resolver"),
        timeout=values.get("timeout") or command.option("timeout").default,
        rules_dirs=tuple(values.get("rules") or ()),
    )
