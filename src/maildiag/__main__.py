"""Entry point for ``maildiag`` and ``python -m maildiag``.

``explain`` takes a fast path that never imports typer or rich (its cold start is benchmarked);
anything it does not understand goes to the full typer app. The top-level ``--help`` is printed
from ``maildiag._help`` for the same reason.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) <= 1 and args in ([], ["--help"], ["-h"]):
        # Top-level help without importing typer (maildiag._help; a test keeps it in step).
        from maildiag import _help

        if _help.wide_enough():
            (sys.stdout if args else sys.stderr).write(_help.HELP)
            return 0 if args else 3  # no arguments is a usage error, as click has it
    if args[:1] == ["explain"]:
        from maildiag.explaining import fast_main

        rc = fast_main(args[1:])
        if rc is not None:
            return rc
    from maildiag.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
