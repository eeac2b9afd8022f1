"""Entry point for ``maildiag`` and ``python -m maildiag``.

``main(argv)`` returns the exit code and is what tests and other Python callers use. ``run()`` is
the console script: it flushes what was printed and ends the process at once (``os._exit``),
skipping the interpreter's finalization of every module a check imported — work nobody sees,
which costs more than a whole ``python -c pass``. Only the process's own entry point may do that;
library code never exits.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def main(argv: list[str] | None = None) -> int:
    from maildiag.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else list(argv))


def run() -> NoReturn:
    """The console script: ``main()``, then flush and exit without finalization."""
    import os

    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away: the exit code still stands
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
