"""A live line on stderr while the checks run: what the run waits for now, and how far it is.

    ⠹ 5/18 imap.yandex.ru:993: TLS handshake, 7 s left (+2)

``done/total`` counts the checks reported so far against the checks the run will report
(``Planned`` events: known from the first moment, corrected once discovery has found the
servers); then the step waited for longest among those under way (``StepStart`` events from the
pipeline and the sessions: discovery, the clock, a server's connect, greeting, TLS handshake,
capabilities, login), where, and the seconds left of its timeout; ``(+N)`` other steps under way.
The line is redrawn a few times a second and erased when the run ends; it is shown only when
stderr is a terminal (``check`` decides), so a pipe or a log file never sees it. Every word comes
from rules/ui-report.yaml (``progress.*``).

Several runs (``--config``) share one line: each gets its own listener (``listener(run)``), and
the totals add up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from maildiag.models import Observation, Planned, RunEvent, StepStart
from maildiag.terminal import one_line, unicode_ok

if TYPE_CHECKING:
    from maildiag.rulebase import RuleBase

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ASCII_FRAMES = "|/-\\"
INTERVAL = 0.2  # seconds between redraws


class Progress:
    def __init__(
        self,
        lang: str,
        rules: RuleBase,
        stream: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        width: int = 80,
        animate: bool = True,
    ) -> None:
        self.lang, self.rules, self.stream = lang, rules, stream
        self.clock = clock
        self.width = width
        self.frames = FRAMES if unicode_ok(stream) else ASCII_FRAMES
        self._lock = threading.Lock()
        self._planned: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._active: dict[tuple[str, str], StepStart] = {}  # (run, lane) -> its current step
        self._tick = 0
        self._shown = 0  # length of the line on screen
        self._drawing = threading.Lock()  # one writer at a time: the ticker, or the first event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.animate = animate
        if animate:
            self._thread = threading.Thread(target=self._loop, name="maildiag-progress")
            self._thread.daemon = True
            self._thread.start()

    # -- what the runs say ------------------------------------------------------------------
    def listener(
        self, run: str = ""
    ) -> tuple[Callable[[RunEvent], None], Callable[[Observation], None]]:
        """The event and observation callbacks of one run (``check_mailbox``'s ``on_event``
        and ``on_observation``)."""

        def on_event(event: RunEvent) -> None:
            with self._lock:
                if isinstance(event, Planned):
                    self._planned[run] = event.checks
                    self._done.setdefault(run, 0)
                else:
                    self._active[(run, event.lane)] = event
            if self.animate and not self._tick:
                self._draw()  # from the first moment, not a tick later

        def on_observation(obs: Observation) -> None:
            with self._lock:
                self._done[run] = self._done.get(run, 0) + 1
                lane = obs.target.label if obs.target is not None else obs.check
                current = self._active.get((run, lane))
                if current is not None and current.check == obs.check:
                    del self._active[(run, lane)]

        return on_event, on_observation

    # -- the line ---------------------------------------------------------------------------
    def line(self) -> str:
        """The progress line as it stands now (without the spinner)."""
        with self._lock:
            total = sum(self._planned.values())
            done = min(sum(self._done.values()), total) if total else sum(self._done.values())
            steps = sorted(self._active.values(), key=lambda s: s.started)
        if not steps:
            return self.rules.words("progress.idle", self.lang, done=done, total=total)
        step = steps[0]
        left = max(0, math.ceil(step.timeout - (self.clock() - step.started)))
        text = self.rules.words(
            "progress.line",
            self.lang,
            done=done,
            total=total,
            where=step.where,
            step=self.rules.words("progress.step." + step.check.rsplit(".", 1)[-1], self.lang),
            left=left,
        )
        if len(steps) > 1:
            text += f" (+{len(steps) - 1})"
        return one_line(text)

    def _draw(self) -> None:
        with self._drawing:
            if self._stop.is_set():
                return
            frame = self.frames[self._tick % len(self.frames)]
            self._tick += 1
            text = f"{frame} {self.line()}"[: max(10, self.width - 1)]
            # \r and blanks, not an erase-line escape: every console, Windows' old one too
            pad = " " * max(0, self._shown - len(text))
            try:
                self.stream.write("\r" + text + pad)
                self.stream.flush()
            except (OSError, ValueError):
                self._stop.set()
            self._shown = len(text)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._draw()

    def close(self) -> None:
        """Stop and erase the line."""
        with self._drawing:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._shown:
            try:
                self.stream.write("\r" + " " * self._shown + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._shown = 0
