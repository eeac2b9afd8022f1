"""maildiag: tells you why your mail program cannot send or receive, and what to change."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from maildiag.models import Finding

__all__ = ["__version__", "explain"]


def explain(text: str, lang: str = "en") -> list[Finding]:
    """Diagnose an error text with the built-in rules; best match first."""
    from maildiag.explaining import explain_text

    return explain_text(text, lang=lang)
