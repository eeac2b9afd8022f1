"""Write the generated parts of docs/reference.md from the declarations they describe.

The options of every command come from ``maildiag.options.COMMANDS``, the checks from the
registry ``maildiag.probes.CHECKS``: each is declared once, in the code, and this script copies
them into the reference between ``<!-- generated:NAME -->`` and ``<!-- /generated -->`` markers.
The rest of the file is written by hand. tests/test_docs.py fails when the file and the
declarations differ.

    python scripts/reference.py          # rewrite docs/reference.md
    python scripts/reference.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
_SECTION = re.compile(r"(<!-- generated:([a-z-]+) -->\n).*?(<!-- /generated -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_table(command_name: str) -> str:
    from maildiag.options import COMMANDS, Scope

    command = next(c for c in COMMANDS if c.name == command_name)
    rows = ["| option | value | meaning | in a targets file |", "| --- | --- | --- | --- |"]
    for option in command.options:
        if option.negated_by:
            name, value = f"`{option.negated_by}`", ""
            meaning = f"do not {option.help}"
        elif not option.cli:
            name, value, meaning = "—", f"`{option.metavar}`" if option.metavar else "", option.help
        elif option.positional:
            name, value, meaning = f"`{option.metavar}`", "", option.help
        else:
            name = ", ".join(f"`{flag}`" for flag in option.flags)
            value = f"`{option.metavar}`" if option.metavar else ""
            meaning = option.help
        if option.repeat:
            meaning += " (may be given more than once)"
        if option.default not in (None, (), "", False, True):
            meaning += f"; default {option.default}"
        if option.config is None or option.scope is Scope.RUN:
            where = ""
        elif option.scope is Scope.SHARED:
            where = f"`{option.config}` (a target or `defaults`)"
        elif option.scope is Scope.SERVE:
            where = f"`{option.config}` (the `exporter` section)"
        else:
            where = f"`{option.config}` (a target)"
        rows.append(f"| {name} | {_cell(value)} | {_cell(meaning)} | {where} |")
    return "\n".join(rows)


def checks_table() -> str:
    from maildiag.models import Service
    from maildiag.probes import CHECKS, Scope

    rows = ["| check | services | what it establishes | signals |", "| --- | --- | --- | --- |"]
    for spec in CHECKS:
        name = spec.name if spec.scope is Scope.RUN else f"<svc>.{spec.name}"
        services = (
            "run"
            if spec.scope is Scope.RUN
            else ", ".join(
                str(s) + (" (password or token)" if s in spec.needs_password else "")
                for s in Service
                if s in spec.services
            )
        )
        signals = ", ".join(f"`{s}`" for s in spec.signals) or "—"
        rows.append(f"| `{name}` | {services} | {_cell(spec.establishes)} | {signals} |")
    return "\n".join(rows)


def sections() -> dict[str, str]:
    from maildiag.options import COMMANDS

    out = {f"options-{c.name.replace(' ', '-')}": options_table(c.name) for c in COMMANDS}
    out["checks"] = checks_table()
    return out


def render(text: str) -> str:
    wanted = sections()
    seen: set[str] = set()

    def fill(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in wanted:
            raise SystemExit(f"{REFERENCE}: no generator for the section {name!r}")
        seen.add(name)
        return m.group(1) + wanted[name] + "\n" + m.group(3)

    result = _SECTION.sub(fill, text)
    missing = sorted(set(wanted) - seen)
    if missing:
        raise SystemExit(f"{REFERENCE}: no place for the sections {', '.join(missing)}")
    return result


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    current = REFERENCE.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{REFERENCE} is out of date: run python scripts/reference.py", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
