"""The languages maildiag speaks, and the one the user's locale asks for.

Every rule, summary and label in rules/ carries a text in each of ``LANGS``; this module is the
one place that list lives. It imports nothing: every command reads it on its way in.
"""

from __future__ import annotations

import os

LANGS = ("en", "ru")


def default_lang() -> str:
    """``ru`` when the locale is Russian, else ``en`` (LC_ALL > LC_MESSAGES > LANG > LANGUAGE)."""
    return locale_lang() or "en"


def locale_lang() -> str | None:
    """The language the locale chose, or None when it chose none.

    The first of LC_ALL, LC_MESSAGES, LANG and LANGUAGE that is set decides; the C and POSIX
    locales (C.UTF-8 too), like no variable at all, choose no language. ``explain`` then answers
    in the language of the text it was given.
    """
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(var, "")
        if value:
            if value.split(".")[0].split("@")[0].upper() in ("C", "POSIX"):
                return None
            return "ru" if value.lower().startswith("ru") else "en"
    return None
