"""The rule base: load, validate, cache, match and render the YAML rules in rules/.

The package: ``files`` (where rule files live), ``schema`` (reading and validating them),
``cache`` (the validated data as marshal), ``regexes`` (what the lint refuses, and the literals
the prefilter indexes), ``text`` (normalisation, reply codes, templates), ``matcher`` (``Rule``,
``Match``, ``RuleBase``: which rules explain a text), ``render`` (titles, steps and ``ui`` words).

Contract
--------
``RuleBase.load(extra_dirs)`` reads every top-level ``*.yaml`` of the built-in rules directory,
then of each ``MAILDIAG_RULES`` entry, then of each extra directory (later directories win: a rule
with the same id replaces the earlier one). rules/providers (the provider database) is not read.
Every problem in a file is a ``RuleBaseError`` whose text is one line naming the file and the rule.

``RuleBase.match(text, signal=..., protocol=..., provider=...)`` returns ``Match`` objects, best
first. ``RuleBase.finding(match, lang=..., params=...)`` renders one as a ``models.Finding``.

A rule file is a mapping with these top-level keys (all optional)::

    rules:          list of rules (schema below)
    params:         {name: {en: text, ru: text}}   default wording of a missing {param}
    ui:             {key: {en: text, ru: text}}     labels the explain command prints
    interception:   [{issuer: substring, product: name}]   TLS-inspection products
    provider_hints: {provider: [regex, ...]}          words that reveal who answered

A rule::

    id: yandex.smtp-auth-off          # [a-z0-9][a-z0-9._-]*, unique within a directory
    category: auth_required           # models.Category
    severity: fail                    # info | warn | fail
    priority: 0                       # optional tie-breaker, -9..9 (use sparingly)
    fallback: false                   # true: speaks only when no other text rule matched
    match:                            # every condition given must hold (AND); lists mean any-of
      text: [regex, ...]              # searched case-insensitively, ^/$ at line ends
      unless: [regex, ...]            # the rule does not apply when one of these matches
      code: ["535", "5xx"]            # SMTP basic reply code (x = any digit)
      enhanced: ["5.7.8", "5.7.*"]    # RFC 3463 enhanced status code (* = any)
      protocol: [smtp, imap, pop3]    # applies only to these (when the caller knows)
      provider: [yandex]              # applies only to this provider (when the caller knows)
      signal: [connect.refused]       # probe signals this rule explains (maildiag.signals)
    title: {en: ..., ru: ...}         # may quote {param}; [[ ... {param} ... ]] is dropped
    steps: {en: [...], ru: [...]}     #   when a param inside it is unknown
    links: [https://...]
    examples: [text | {text, signal, protocol, provider}]   # must match, as the best rule
    counterexamples: [same]                                  # must not match

Ranking, best first: explained by the signal asked for; priority; provider-specific (the caller
named the provider, or a provider hint such as ``gsmtp`` or ``yandex`` is in the text); matched by
text; enhanced code over basic code; the longer text match; a generic rule over a provider rule
(a provider rule whose provider is not known applies, but does not outrank the generic one).
Rules of equal rank come in the order their regexes first appear in the rule files (the same in
every process: it used to depend on string hashing).
Code-only rules (the RFC 3463 layer) are dropped by ``explain`` when any text rule matched.

Speed: regexes are compiled lazily, one by one, and only run when a literal every match of them
must contain (found at load time) is present in the text. Each literal is indexed by the first
four letters of a word it contains that starts at a word boundary; a text's words give the keys to
look up, and only those literals are checked (``in``) and only their regexes run. On ASCII text
(where lower-casing agrees with case-insensitive matching) every other literal set a regex needs
(``literal_sets``) is checked too before it runs: most regexes whose rarest word is present but
whose other words are not never run.
The validated rule data is cached as marshal in the user cache directory, keyed by the rule
files' paths, sizes and mtimes (and this module's), so a cold ``explain`` imports no yaml.
Regexes may not nest quantifiers nor use unbounded ``*``/``+``/``{n,}`` (write ``{0,80}``): with
the text capped at ``MAX_TEXT`` characters, matching stays linear in the worst case.
"""

from __future__ import annotations

from maildiag.rulebase.base import MAX_TEXT, RuleBaseError
from maildiag.rulebase.files import builtin_rules_dir, rule_dirs
from maildiag.rulebase.matcher import Match, Rule, RuleBase
from maildiag.rulebase.regexes import regex_problem
from maildiag.rulebase.render import plural_form
from maildiag.rulebase.text import extract_codes, normalize_text

__all__ = [
    "MAX_TEXT",
    "Match",
    "Rule",
    "RuleBase",
    "RuleBaseError",
    "builtin_rules_dir",
    "extract_codes",
    "normalize_text",
    "plural_form",
    "regex_problem",
    "rule_dirs",
]
