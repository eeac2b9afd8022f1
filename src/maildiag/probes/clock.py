"""The ``clock`` check: the local clock against a reference clock (SNTP, RFC 4330).

Scaffold until the clock check lands: the check is reported as ``skip`` with its reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from maildiag.config import RunConfig
from maildiag.models import Observation, Problem, Status
from maildiag.runner import Job


def clock_job(config: RunConfig, *, now: Callable[[], dt.datetime], provider: Any) -> Job:
    def run(emit: Callable[[Observation], None]) -> None:
        if not config.check_clock:
            emit(Observation("clock", Status.SKIP, "--no-clock given"))
            return
        emit(Observation("clock", Status.SKIP, "the clock check is not built yet",
                         problems=(Problem("check.not_built", "", {"option": "--time-server"}),)))

    return Job("clock", ("clock",), run)
