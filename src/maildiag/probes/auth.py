"""The login stage: ``smtp.auth``, ``smtp.sender``, ``imap.auth``, ``pop3.auth``.

Scaffold until the login checks land: they are reported as ``skip`` with their reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from maildiag.address import Address
from maildiag.config import RunConfig
from maildiag.models import Observation
from maildiag.probes.session import LoginState


def make_login_stage(config: RunConfig, address: Address,
                     provider: Any) -> Callable[[LoginState], None]:
    def stage(state: LoginState) -> None:
        state.session.skip_reason = "the login checks are not built yet"

    return stage


def cross_check(observations: Sequence[Observation]) -> list[Observation]:
    return list(observations)
