"""The languages maildiag speaks, and the one the user's locale asks for.

Every rule, summary and label in rules/ carries a text in each of ``LANGS``; this module is the
one place that list lives. It imports nothing: every command reads it on its way in.
"""

from __future__ import annotations

import os

LANGS = ("en", "ru")


def default_lang() -> str:
    """``ru`` when the locale is Russian, else ``en`` (LC_ALL > LC_MESSAGES > LANG > LANGUAGE)."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var, "")
        if value:
            return "ru" if value.lower().startswith("ru") else "en"
    return "en"
