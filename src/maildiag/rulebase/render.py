"""Rendering: titles and steps of a finding, and the ``ui`` words (labels, summaries)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maildiag.lang import LANGS
from maildiag.rulebase.text import _render

if TYPE_CHECKING:
    from maildiag.models import Finding, Summary
    from maildiag.rulebase.matcher import Match


class Wording:
    """What ``RuleBase`` renders; mixed into it (see ``matcher.RuleBase``), which sets these:"""

    params: dict[str, dict[str, str]]  # default wording of a missing {param}, by language
    ui: dict[str, dict[str, str]]  # labels and summaries, by language
    _enums: dict[str, tuple[Any, Any, Any]]  # rule id -> (Category, Severity, Finding maker)
    _rendered: dict[tuple[str, str, str | None], tuple[str, tuple[str, ...]]]

    def finding(
        self,
        match: Match,
        *,
        lang: str,
        params: Mapping[str, Any] | None = None,
        check: str | None = None,
    ) -> Finding:
        """The finding a match means, in ``lang`` (en or ru; anything else reads en)."""
        rule = match.rule
        enums = self._enums.get(rule.id)
        if enums is None:
            from maildiag import models  # lazily: not on the cold path of explain --json

            enums = self._enums[rule.id] = (
                models.Category(rule.category),
                models.Severity(rule.severity),
                _finding_maker(models.Finding),
            )
        if not params and match._groups is None:
            title, steps = self._rendered.get((rule.id, lang, match.code)) or self._render_tuple(
                match, lang, None
            )
        else:
            title, steps = self._render_tuple(match, lang, params)
        return enums[2](  # type: ignore[no-any-return]
            rule.id, enums[0], enums[1], title, steps, check, match.evidence, rule.links
        )

    def finding_json(self, match: Match, lang: str, evidence: str | None = None) -> dict[str, Any]:
        """``Finding.to_json()`` of a match, built without importing maildiag.models (explain's
        cold path)."""
        title, steps = self.render(match, lang=lang)
        return {
            "rule": match.rule.id,
            "category": match.rule.category,
            "severity": match.rule.severity,
            "check": None,
            "title": title,
            "steps": steps,
            "evidence": match.evidence if evidence is None else evidence,
        }

    def tally(
        self,
        groups: Mapping[str | None, Mapping[str, Any]],
        matches: Mapping[str, Match],
        lang: str,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The findings and the groups of a log or a mailbox: ``groups`` holds per rule id
        (None: no rule matched) a ``count`` and a ``sample`` line, ``matches`` one match per
        rule id. Most frequent first; a finding's evidence is its group's sample."""
        findings: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        for rule_id, g in sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0] or "~")):
            if rule_id is None:
                title = self.ui_text("log_unmatched", lang)
                rule = category = severity = None
            else:
                f = self.finding_json(matches[rule_id], lang, evidence=g["sample"])
                findings.append(f)
                rule, category, severity, title = rule_id, f["category"], f["severity"], f["title"]
            out.append(
                {
                    "rule": rule,
                    "category": category,
                    "severity": severity,
                    "title": title,
                    "count": g["count"],
                    "sample": g["sample"],
                }
            )
        return findings, out

    def render(
        self, match: Match, *, lang: str, params: Mapping[str, Any] | None = None
    ) -> tuple[str, list[str]]:
        """Title and steps of a match with its params quoted (no models import: fast path)."""
        title, steps = self._render_tuple(match, lang, params)
        return title, list(steps)

    def _render_tuple(
        self, match: Match, lang: str, params: Mapping[str, Any] | None
    ) -> tuple[str, tuple[str, ...]]:
        lang = lang if lang in LANGS else "en"
        cacheable = not params and match._groups is None
        if cacheable:
            key = (match.rule.id, lang, match.code)
            hit = self._rendered.get(key)
            if hit is not None:
                return hit
        values: dict[str, Any] = dict(match.groups)
        if params:
            words = self._word_params(params, lang)
            values.update({k: v for k, v in words.items() if v not in (None, "")})
        if match.code and "code" not in values:
            values["code"] = match.code
        defaults = {k: v.get(lang, v.get("en", "?")) for k, v in self.params.items()}
        rule = match.rule
        title = _render(rule.title[lang], values, defaults)
        steps = tuple(s for s in (_render(s, values, defaults) for s in rule.steps[lang]) if s)
        if cacheable and len(self._rendered) < 100_000:
            self._rendered[key] = (title, steps)
        return title, steps

    def ui_text(self, key: str, lang: str, **params: Any) -> str:
        """A label of the explain command's output, from the ``ui`` tables of the rule files."""
        entry = self.ui.get(key)
        if not entry:
            return key
        text = entry.get(lang) or entry.get("en") or key
        return _render(text, params, {}) if params else text

    def words(self, key: str, lang: str, **params: Any) -> str:
        """The ``ui`` text ``key`` in ``lang`` with ``params`` quoted verbatim.

        Before quoting: a param that is a ``Summary`` is rendered first (``summary.<key>``), a
        list of them is rendered and joined with "; "; a whole number ``X`` with a ``plural.X``
        entry ("day|days", "день|дня|дней") gets ``X_unit``, the unit word
        in the plural form the number takes. A server's words are not subject to the
        template's spacing and punctuation clean-up.
        """
        values = self._word_params(params, lang)
        verbatim: list[str] = []
        safe: dict[str, str] = {}
        for name, value in values.items():
            if value is None or value == "":
                safe[name] = ""
                continue
            safe[name] = f"\x00{len(verbatim)}\x00"
            verbatim.append(str(value))
        out = self.ui_text(key, lang, **safe) if safe else self.ui_text(key, lang)
        return _TOKEN.sub(lambda m: verbatim[int(m.group(1))], out) if verbatim else out

    def summary_text(self, summary: Summary, lang: str) -> str:
        """A check's summary in ``lang`` (``en`` is what JSON shows)."""
        return self.words("summary." + summary.key, lang, **summary.params)

    def _word_params(self, params: Mapping[str, Any], lang: str) -> dict[str, Any]:
        from maildiag.models import Summary

        out: dict[str, Any] = {}
        for name, value in params.items():
            if isinstance(value, Summary):
                value = self.summary_text(value, lang)
            elif isinstance(value, (list, tuple)) and all(isinstance(v, Summary) for v in value):
                value = "; ".join(t for t in (self.summary_text(v, lang) for v in value) if t)
            out[name] = value
        for name, value in list(out.items()):
            if isinstance(value, int) and not isinstance(value, bool):
                forms = self.ui.get("plural." + name)
                if forms:
                    out[name + "_unit"] = plural_form(value, forms.get(lang) or forms["en"])
        return out


_TOKEN = re.compile("\x00([0-9]+)\x00")


def plural_form(n: int, forms: str) -> str:
    """The form of a unit word for ``n``: "one|many" (English) or "one|few|many" (Russian)."""
    words = [w.strip() for w in forms.split("|")]
    n = abs(n)
    if len(words) >= 3:
        if n % 10 == 1 and n % 100 != 11:
            return words[0]
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return words[1]
        return words[2]
    return words[0] if n == 1 or len(words) == 1 else words[1]


_FINDING_FIELDS = ("rule", "category", "severity", "title", "steps", "check", "evidence", "links")


def _finding_maker(cls: Any) -> Any:
    """``cls(*fields)`` for ``models.Finding``, faster.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; its slot
    descriptors do the same for a fraction of the cost. Should Finding change shape (other
    fields, a ``__post_init__``, no slots), this is the class itself.
    """
    import dataclasses

    names = tuple(f.name for f in dataclasses.fields(cls))
    if names != _FINDING_FIELDS or hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        return cls
    s_rule, s_cat, s_sev, s_title, s_steps, s_check, s_evidence, s_links = (
        vars(cls)[n].__set__ for n in names
    )
    new = object.__new__

    def make(
        rule: str,
        category: Any,
        severity: Any,
        title: str,
        steps: tuple[str, ...],
        check: str | None,
        evidence: str,
        links: tuple[str, ...],
    ) -> Any:
        f = new(cls)
        s_rule(f, rule)
        s_cat(f, category)
        s_sev(f, severity)
        s_title(f, title)
        s_steps(f, steps)
        s_check(f, check)
        s_evidence(f, evidence)
        s_links(f, links)
        return f

    return make
