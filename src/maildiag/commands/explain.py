"""``maildiag explain``: the diagnosis of an error text, stdin, or each error line of a log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maildiag.options import Command


def main(command: Command, raw: Mapping[str, Any]) -> int:
    values = command.checked(raw)
    from maildiag.explaining import run_explain

    try:
        return run_explain(
            values.get("text"),
            values.get("file"),
            bool(values.get("json")),
            values.get("lang"),
            tuple(values.get("rules") or ()),
        )
    except BrokenPipeError:  # `| head`: the answer was being printed, as exit 0 says
        from maildiag.terminal import quiet_stdout

        quiet_stdout()
        return 0
