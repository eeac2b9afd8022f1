"""Constants of the rule base and its one error type."""

from __future__ import annotations

import re

CACHE_FORMAT = 7  # bump when the cached structure or the literal extraction changes
MAX_TEXT = 16384  # characters of a text the matcher looks at: the head and the tail
MAX_REPEAT_BOUND = 1000  # the largest {m,n} a rule regex may use
# ways quantifiers in a row may split a text between them (regex_problem); the built-ins need 1708
MAX_BACKTRACK = 10_000
# seconds the regexes of user rules may take on one text, and in timeouts over a whole process
USER_REGEX_BUDGET = 0.5
USER_REGEX_TOTAL = 2.0
MAX_FINDINGS = 5  # an explanation lists at most this many rules
PROTOCOLS = ("smtp", "imap", "pop3")
SEVERITIES = ("info", "warn", "fail")
RE_FLAGS = re.IGNORECASE | re.MULTILINE

_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_NEVER = re.compile(r"(?!)")  # matches nothing
_CODE_RE = re.compile(r"[2-5][0-9x][0-9x]\Z")
_ENH_RE = re.compile(r"([245*])\.([0-9]{1,3}|\*)\.([0-9]{1,3}|\*)\Z")
_PARAM_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_OPTIONAL_RE = re.compile(r"\[\[(.*?)\]\]", re.S)
_LINK_RE = re.compile(r"https?://\S+\Z")

_RULE_KEYS = frozenset(
    {
        "id",
        "category",
        "severity",
        "priority",
        "fallback",
        "match",
        "title",
        "steps",
        "links",
        "examples",
        "counterexamples",
    }
)
_MATCH_KEYS = frozenset({"text", "unless", "code", "enhanced", "protocol", "provider", "signal"})
_EXAMPLE_KEYS = frozenset({"text", "signal", "protocol", "provider"})
_FILE_KEYS = frozenset({"rules", "params", "ui", "interception", "provider_hints"})
_INTERCEPTION_KEYS = frozenset({"issuer", "product"})


class RuleBaseError(Exception):
    """A rule base that cannot be used; ``str()`` is one line naming the file and the rule."""
