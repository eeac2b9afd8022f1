"""Entry point for ``maildiag`` and ``python -m maildiag``.

``explain`` takes a fast path that never imports typer or rich (its cold start is benchmarked);
anything it does not understand, ``--help`` included, goes to the full typer app.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["explain"]:
        from maildiag.explaining import fast_main

        rc = fast_main(args[1:])
        if rc is not None:
            return rc
    from maildiag.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
