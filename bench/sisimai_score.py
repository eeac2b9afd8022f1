"""Score ``maildiag.explain`` on Sisimai's bounce corpus (tests/data/sisimai).

Each of the 629 files is a real bounce; expected.json gives the reason Sisimai's own tests assign
to each recipient and mapping.yaml maps those reasons to our categories in two tiers (strict,
loose; some reasons are excluded). A file is scored in the tier of its first recipient's reason;
the top finding must carry one of that tier's categories for the file's recipients (an empty
answer is wrong). Two inputs per file:

- ``email``: the whole message, as a user pastes it (the file decoded as UTF-8);
- ``diag``: only the first ``Diagnostic-Code:`` field (continuation lines unfolded), as a user
  copies the one line; scored on the files that have one;
- ``diag|email``: that field where the file has one, else the whole message (every file).

Run: .venv/bin/python bench/sisimai_score.py [--misses] [--by-vendor] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

import maildiag  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "sisimai"
TIERS = ("strict", "loose")
MODES = ("email", "diag", "diag|email")
_DIAG = re.compile(r"^Diagnostic-Code:[ \t]*(.*(?:\n[ \t]+.*)*)", re.I | re.M)


@dataclass
class Case:
    name: str
    tier: str
    accepted: frozenset[str]
    email: str
    diag: str


@dataclass
class Score:
    tier: str
    mode: str
    right: int = 0
    total: int = 0
    misses: list[tuple[str, str, str | None]] = field(default_factory=list)
    by_vendor: Counter[str] = field(default_factory=Counter)
    vendor_right: Counter[str] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0


def vendor(name: str) -> str:
    """``lhost-postfix-07.eml`` -> ``lhost-postfix`` (Sisimai's module names the bounce form)."""
    return re.sub(r"-\d+\.eml$", "", name)


def diagnostic_line(text: str) -> str:
    m = _DIAG.search(text)
    if not m:
        return ""
    return "Diagnostic-Code: " + re.sub(r"\n[ \t]+", " ", m.group(1)).strip()


def load_cases(corpus: Path = CORPUS) -> list[Case]:
    expected = json.loads((corpus / "expected.json").read_text(encoding="utf-8"))["emails"]
    mapping = yaml.safe_load((corpus / "mapping.yaml").read_text(encoding="utf-8"))
    cases = []
    for name in sorted(expected):
        reasons = expected[name]
        if not reasons:
            continue
        tier = next((t for t in TIERS if reasons[0] in mapping[t]), None)
        if tier is None:
            continue
        accepted = frozenset(c for r in reasons if r in mapping[tier] for c in mapping[tier][r])
        raw = (corpus / "emails" / name).read_bytes().decode("utf-8", "replace")
        cases.append(Case(name, tier, accepted, raw, diagnostic_line(raw)))
    return cases


def score(cases: list[Case], tier: str, mode: str) -> Score:
    s = Score(tier, mode)
    for case in cases:
        if case.tier != tier:
            continue
        if mode == "diag" and not case.diag:
            continue
        text = case.diag if mode != "email" and case.diag else case.email
        findings = maildiag.explain(text) if text.strip() else []
        got = str(findings[0].category) if findings else None
        s.total += 1
        s.by_vendor[vendor(case.name)] += 1
        if got in case.accepted:
            s.right += 1
            s.vendor_right[vendor(case.name)] += 1
        else:
            s.misses.append((case.name, "/".join(sorted(case.accepted)), got))
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--misses", action="store_true", help="list every wrong answer")
    ap.add_argument("--by-vendor", action="store_true", help="accuracy per bounce form")
    args = ap.parse_args()
    cases = load_cases(args.corpus)
    no_diag = sum(1 for c in cases if not c.diag)
    print(f"{len(cases)} scored files ({no_diag} without a Diagnostic-Code field)")
    for tier in TIERS:
        for mode in MODES:
            s = score(cases, tier, mode)
            print(f"{tier:<6} {mode:<10} {s.right:>4}/{s.total:<4} {100 * s.accuracy:5.1f}%")
            if args.by_vendor and mode == "email":
                for v, n in sorted(s.by_vendor.items()):
                    print(f"    {v:<28} {s.vendor_right[v]:>3}/{n}")
            if args.misses:
                for name, want, got in s.misses:
                    print(f"    {name:<34} want {want:<40} got {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
