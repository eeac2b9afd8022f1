"""maildiag: tells you why your mail program cannot send or receive, and what to change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from maildiag.models import Finding

__all__ = ["__version__", "explain"]


def explain(text: str, lang: str = "en") -> list[Finding]:
    """Diagnose an error text with the built-in rules; best match first."""
    findings: list[Finding] = _explain_text()(text, lang=lang)
    return findings


def _explain_text() -> Any:
    # imported on first use (``import maildiag`` stays light), then called directly: an import
    # statement per call costs more than a small explain does
    global _EXPLAIN
    if _EXPLAIN is None:
        from maildiag.explaining import explain_text

        _EXPLAIN = explain_text
    return _EXPLAIN


_EXPLAIN: Any = None
