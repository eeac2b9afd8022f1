"""Rule regexes analysed: what the lint refuses, and the literals the prefilter indexes."""

from __future__ import annotations

import re
from typing import Any

from maildiag.rulebase.base import MAX_BACKTRACK, MAX_REPEAT_BOUND, RE_FLAGS

_WORD = re.compile(r"\w+")
_WORD_KEY = re.compile(r"(\w{1,4})\w*")  # the first four letters of each word (the index keys)
_WORD_KEY_ASCII = re.compile(r"(\w{1,4})\w*", re.ASCII)


def _word_keys(lit: str, starts_word: bool) -> list[str]:
    """Index keys a text containing ``lit`` is sure to have among its words' first 4 letters."""
    keys = []
    for m in _WORD.finditer(lit):
        if m.start() == 0 and not starts_word:
            continue  # the literal may begin in the middle of a word of the text
        tok = m.group()
        if len(tok) >= 4:
            keys.append(tok[:4])
        elif m.end() < len(lit):  # a short word that ends inside the literal is a whole word
            keys.append(tok)
    return keys


# --------------------------------------------------------------------------- regex analysis


def regex_problem(src: str, memo: dict[Any, int] | None = None) -> str | None:
    """Why a rule regex is unsafe or invalid, or None when it is fine.

    Refused, because a backtracking engine can spend minutes on one line with them: unbounded
    repeats; a repeat (that can run more than once) of anything that is not one fixed-width
    piece — a nested quantifier, an optional part or an alternation (``(?:a|a){1,60}``); and
    quantifiers in a row that can take turns on the same characters with more than
    ``MAX_BACKTRACK`` ways of splitting a text between them (``\\w{0,1000}\\w{0,1000}``).
    Matching is bounded in time besides (``USER_REGEX_BUDGET``), whatever slips through.
    ``memo``: character sets already worked out, shared by the regexes of one load.
    """
    try:
        re.compile(src, RE_FLAGS)
    except re.error as exc:
        return f"does not compile: {exc}"
    import re._constants as c  # type: ignore[import-not-found]  # CPython's own parser
    import re._parser as p  # type: ignore[import-not-found]

    tree = p.parse(src, RE_FLAGS)
    repeats = (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None))

    def walk(items: Any) -> str | None:
        for op, av in items:
            if op in repeats:
                lo, hi, body = av
                if hi == c.MAXREPEAT or hi > MAX_REPEAT_BOUND:
                    return "unbounded repeat (*, + or {n,}): write a bound such as {0,80}"
                if hi > 1:
                    if _has_repeat(body, c):
                        return "nested quantifiers (catastrophic backtracking)"
                    if _has_branch(body, c):
                        return (
                            "alternation inside a repeat (catastrophic backtracking): "
                            "use a character class, or repeat the whole alternation once"
                        )
                    if _variable(body, c):
                        return (
                            "a repeat of a part with optional pieces (catastrophic "
                            "backtracking): repeat one fixed-width piece"
                        )
                problem = walk(body)
            elif op == c.SUBPATTERN:
                problem = walk(av[3])
            elif op == c.BRANCH:
                problem = next((x for x in map(walk, av[1]) if x), None)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                problem = walk(av[1])
            elif op == c.GROUPREF:
                problem = "back-references are not allowed"
            else:
                problem = None
            if problem:
                return problem
        return None

    problem = walk(tree)
    if problem:
        return problem
    if _ranges(tree, c) < 2:
        return None  # one quantifier alone is bounded by MAX_REPEAT_BOUND
    ways = _chain_ways(tree, c, memo)
    if ways > MAX_BACKTRACK:
        return (
            f"quantifiers in a row that can match the same characters may try {ways} ways "
            f"of splitting a text between them (at most {MAX_BACKTRACK}): lower their bounds "
            "or put a character between them that they cannot match"
        )
    return None


def _has_repeat(items: Any, c: Any) -> bool:
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[1] > 1:
            return True
        if op == c.SUBPATTERN and _has_repeat(av[3], c):
            return True
        if op == c.BRANCH and any(_has_repeat(b, c) for b in av[1]):
            return True
    return False


def _has_branch(items: Any, c: Any) -> bool:
    for op, av in items:
        if op == c.BRANCH:
            return True
        if op == c.SUBPATTERN and _has_branch(av[3], c):
            return True
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and _has_branch(av[2], c):
            return True
        if op in (c.ASSERT, c.ASSERT_NOT) and _has_branch(av[1], c):
            return True
    return False


def _variable(items: Any, c: Any) -> bool:
    """Whether ``items`` can match texts of different lengths (or look ahead a variable
    distance): a repeat of them would have several ways to cover the same text."""
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and (av[0] != av[1] or _variable(av[2], c)):
            return True
        if op == c.SUBPATTERN and _variable(av[3], c):
            return True
        if op == c.BRANCH:
            return True
        if op in (c.ASSERT, c.ASSERT_NOT) and _variable(av[1], c):
            return True
    return False


# Characters to tell whether two pieces of a regex can match the same character: ASCII, Latin-1
# letters, Cyrillic, and a few spaces; a set of them is a bit mask over this list. (Enough for
# the question "could these two quantifiers take turns on one run of text"; a pair that only
# shares exotic characters is let through, and the time budget covers it.)
_SAMPLE = "".join(
    [chr(i) for i in range(0x80)]
    + [chr(i) for i in range(0xA0, 0x180)]
    + [chr(i) for i in range(0x400, 0x460)]
    + ["\u2028", "\u3000"]
)
_ALL = (1 << len(_SAMPLE)) - 1


def _mask_of(pattern: str) -> int:
    """The sample characters a one-character pattern matches: where it matches in the sample."""
    return sum(1 << m.start() for m in re.finditer(pattern, _SAMPLE, RE_FLAGS))


def _chars(op: Any, av: Any, c: Any, memo: dict[Any, int]) -> int | None:
    """The sample characters one single-character piece matches (a mask); None for others."""
    if op not in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
        return None
    key = (str(op), repr(av))
    mask = memo.get(key)
    if mask is None:
        if op == c.ANY:
            mask = _mask_of(".")
        elif op in (c.LITERAL, c.NOT_LITERAL):
            mask = _mask_of(re.escape(chr(av)))
            if op == c.NOT_LITERAL:
                mask = _ALL & ~mask
        else:
            mask = 0
            negate = False
            for o, a in av:
                if o == c.NEGATE:
                    negate = True
                elif o == c.LITERAL:
                    mask |= _mask_of(re.escape(chr(a)))
                elif o == c.RANGE:
                    mask |= _mask_of(f"[{re.escape(chr(a[0]))}-{re.escape(chr(a[1]))}]")
                elif o == c.CATEGORY:
                    mask |= _mask_of(_CATEGORY.get(str(a), r"[^\s\S]"))
            if negate:
                mask = _ALL & ~mask
        memo[key] = mask
    return mask


_CATEGORY = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _first_chars(items: Any, c: Any, memo: dict[Any, int]) -> int:
    """Every sample character any single-character piece inside ``items`` matches (a mask)."""
    out = 0
    for op, av in items:
        chars = _chars(op, av, c, memo)
        if chars is not None:
            out |= chars
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            out |= _first_chars(av[2], c, memo)
        elif op == c.SUBPATTERN:
            out |= _first_chars(av[3], c, memo)
        elif op == c.BRANCH:
            for branch in av[1]:
                out |= _first_chars(branch, c, memo)
    return out


def _ranges(items: Any, c: Any) -> int:
    """How many quantifiers with a range (``{0,80}``, ``?``) ``items`` holds, at any depth."""
    n = 0
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            n += (av[0] != av[1]) + _ranges(av[2], c)
        elif op == c.SUBPATTERN:
            n += _ranges(av[3], c)
        elif op == c.BRANCH:
            n += sum(_ranges(b, c) for b in av[1])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            n += _ranges(av[1], c)
    return n


def _chain_ways(items: Any, c: Any, memo: dict[Any, int] | None = None) -> int:
    """The most ways quantifiers in a row may split one text between them: the product of
    their ranges, for neighbours whose characters overlap (so the engine can hand characters
    from one to the next when what follows fails)."""
    memo = {} if memo is None else memo  # masks of the pieces seen, for this regex
    best = 1
    ways = 1
    reach = 0  # the characters the current chain can take (a mask)
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            lo, hi, body = av
            best = max(best, _chain_ways(body, c, memo))
            chars = _first_chars(body, c, memo)
            if hi > lo:
                ways = ways * (hi - lo + 1) if reach & chars else hi - lo + 1
                reach = chars
            elif not reach & chars:
                ways, reach = 1, 0
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            if op != c.AT:
                best = max(best, _chain_ways(av[1], c, memo))
            continue  # zero-width: the neighbours still touch
        else:
            if op == c.SUBPATTERN:
                best = max(best, _chain_ways(av[3], c, memo))
                chars = _first_chars(av[3], c, memo)
            elif op == c.BRANCH:
                best = max(best, *(_chain_ways(b, c, memo) for b in av[1]))
                chars = _first_chars([(op, av)], c, memo)
            else:
                chars = _chars(op, av, c, memo) or 0
            if not reach & chars:
                ways, reach = 1, 0
        best = max(best, ways)
    return best


def required_literals(src: str) -> list[tuple[str, bool]] | None:
    """Lower-cased literals one of which every match of ``src`` contains; None if unknown.

    Each comes with whether it starts at a word start of the text. A literal at the very start
    of the pattern (or of a group at its start) counts as one: rule regexes begin with a word.
    Used as a prefilter: a regex runs only when one of its literals is in the text.
    """
    import re._constants as c
    import re._parser as p

    tree = p.parse(src, RE_FLAGS)
    found = _required(list(tree), c, True)
    if not found or min(len(s) for s, _ in found) < 3:
        return None
    return sorted(set(found))


def literal_sets(src: str) -> list[list[str]]:
    """Every set of lower-cased literals one of which each match of ``src`` contains.

    Each set is a necessary condition on its own: the matcher checks them all (on ASCII text)
    before it runs a regex, so a regex whose rarest word is present but whose other words are
    not is never run. Sets with a letter that an ASCII letter matches case-insensitively
    (the long s, the Kelvin sign...) are left out: a lower-cased text would not show them.
    """
    import re._constants as c
    import re._parser as p

    tree = p.parse(src, RE_FLAGS)
    out = []
    for alts in _candidates(list(tree), c, True):
        lits = sorted({s for s, _ in alts})
        if all(_ascii_safe(s) for s in lits) and lits not in out:
            out.append(lits)
    return out


def _ascii_safe(literal: str) -> bool:
    """No ASCII character matches a non-ASCII character of the literal case-insensitively
    (there are four: the dotted and dotless i, the long s, the Kelvin sign)."""
    return literal.isascii() or not any(_ASCII_FOLD.match(ch) for ch in literal if not ch.isascii())


_ASCII_FOLD = re.compile(r"[\x00-\x7f]", re.IGNORECASE)


def _required(items: list[Any], c: Any, start_ok: bool) -> list[tuple[str, bool]] | None:
    candidates = _candidates(items, c, start_ok)
    if not candidates:
        return None
    # the best: the fewest alternatives whose shortest literal is longest
    return max(
        candidates,
        key=lambda alts: (
            min(len(s) for s, _ in alts) >= 5,
            -len(alts),
            min(len(s) for s, _ in alts),
        ),
    )


def _candidates(items: list[Any], c: Any, start_ok: bool) -> list[list[tuple[str, bool]]]:
    """The literal sets of a sequence: each holds the literals one of which a match contains."""
    candidates: list[list[tuple[str, bool]]] = []
    run: list[str] = []
    prev_ok = start_ok  # does the next element begin at a word start of the text?
    run_ok = start_ok

    def flush() -> None:
        if len(run) >= 3:
            candidates.append([("".join(run).lower(), run_ok)])
        run.clear()

    for op, av in items:
        char = None
        if op == c.LITERAL:
            char = chr(av)
        elif op == c.IN and len(av) == 1 and av[0][0] == c.LITERAL:
            char = chr(av[0][1])
        elif op == c.IN and av and all(o == c.LITERAL for o, _ in av):
            chars = {chr(v).lower() for _, v in av}
            if len(chars) == 1:
                char = chars.pop()
        if char is not None:
            if not run:
                run_ok = prev_ok
            run.append(char)
            prev_ok = not (char.isalnum() or char == "_")
            continue
        flush()
        sub: list[tuple[str, bool]] | None = None
        if op == c.SUBPATTERN:
            sub = _required(list(av[3]), c, prev_ok)
        elif op == c.BRANCH:
            alts = [_required(list(b), c, prev_ok) for b in av[1]]
            if all(alts):
                sub = [s for alt in alts for s in alt]  # type: ignore[union-attr]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            sub = _required(list(av[2]), c, prev_ok)
        if sub and min(len(s) for s, _ in sub) >= 3:
            candidates.append(sub)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            body = list(av[2])
            ends = _ends_non_word(body[-1][0], body[-1][1], c, prev_ok) if body else prev_ok
            prev_ok = ends and (prev_ok or av[0] >= 1)
        else:
            prev_ok = _ends_non_word(op, av, c, prev_ok)
    flush()
    return candidates


def _ends_non_word(op: Any, av: Any, c: Any, before: bool = False) -> bool:
    """Whether what follows this element starts at a word start of the text."""
    if op == c.AT:
        return True
    if op == c.IN:
        return _non_word_class(av, c)
    if op == c.SUBPATTERN:
        items = list(av[3])
        return _ends_non_word(items[-1][0], items[-1][1], c, before) if items else before
    if op == c.BRANCH:
        return all(
            _ends_non_word(list(b)[-1][0], list(b)[-1][1], c, before) if list(b) else before
            for b in av[1]
        )
    if op == c.LITERAL:
        return not (chr(av).isalnum() or chr(av) == "_")
    return False


def _non_word_class(av: Any, c: Any) -> bool:
    """A character class that never matches a word character (``\\s``, ``[ :]``...)."""
    for op, arg in av:
        if op == c.LITERAL and not (chr(arg).isalnum() or chr(arg) == "_"):
            continue
        if op == c.CATEGORY and arg == c.CATEGORY_SPACE:
            continue
        return False
    return True
