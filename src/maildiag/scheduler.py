"""Run every target's session, and the run-level checks, concurrently and within a deadline.

The protocol clients block, so each target gets a daemon thread; a semaphore per host and service
keeps us to ``max_per_host`` connections at once to one server daemon (mail servers ban eager
clients). The semaphores live in a ``HostLimiter``, which a ``--config`` run shares between the
schedulers of all its targets, so the cap holds for the whole run, not per target. The SMTP, IMAP
and POP3 daemons of one host keep separate limits, so they are probed side by side: three
services take as long as the slowest, three filtered ports one timeout.
Observations stream out through ``on_observation`` as they happen, so the text renderer can show
progress, and the run can start more jobs as it learns (an alternative server when one fails): a
job started while ``collect`` runs is waited for too, within the same deadline. When the run's
deadline passes, every check still missing is reported as ``fail`` with a timeout problem — the
run ends on time even if some thread is stuck in a library call.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maildiag.models import Observation, Problem, Status, Summary, Target
from maildiag.probes import check_ids
from maildiag.probes.session import Env, Session

if TYPE_CHECKING:
    from maildiag.config import RunConfig


@dataclass(frozen=True, slots=True)
class Job:
    """A unit of work: a target's session, or a run-level check (``clock``)."""

    name: str
    expected: tuple[str, ...]  # the check ids it will emit
    work: Callable[[Callable[[Observation], None]], None]
    host: str | None = None
    target: Target | None = None
    # runs in the thread that starts it: a job with nothing to wait for (a check turned off)
    inline: bool = False


def session_job(target: Target, make_env: Callable[[Callable[[Observation], None]], Env]) -> Job:
    def run(emit: Callable[[Observation], None]) -> None:
        Session(target, make_env(emit)).probe()

    return Job(
        target.label, check_ids(target.service), run, host=target.host.lower(), target=target
    )


def clock_job(config: RunConfig, **kwargs: Any) -> Job:
    """The run's ``clock`` check as a job (``clock.observe``'s keyword arguments)."""
    from maildiag.probes import clock

    def work(emit: Callable[[Observation], None]) -> None:
        emit(clock.observe(config, **kwargs))

    # --no-clock: nothing to wait for, no thread to start
    return Job("clock", ("clock",), work, inline=not config.check_clock)


class HostLimiter:
    """At most ``per_host`` connections at once to one host and service, for every scheduler that
    shares this object (all targets of a run); thread-safe."""

    def __init__(self, per_host: int = 2) -> None:
        self.per_host = per_host
        self._lock = threading.Lock()
        self._semaphores: dict[tuple[str, str], threading.Semaphore] = {}

    def semaphore(self, key: tuple[str, str]) -> threading.Semaphore:
        with self._lock:
            sem = self._semaphores.get(key)
            if sem is None:
                sem = self._semaphores[key] = threading.Semaphore(self.per_host)
            return sem


class Scheduler:
    """Starts jobs on daemon threads as they become known; ``collect`` ends on a deadline.

    Jobs may be started in several batches (the clock before discovery, the sessions after it);
    ``collect`` waits for all of them until the deadline and fills in what is missing.
    """

    def __init__(
        self,
        *,
        max_per_host: int = 2,
        on_observation: Callable[[Observation], None] | None = None,
        limiter: HostLimiter | None = None,
    ) -> None:
        self.max_per_host = max_per_host
        self.on_observation = on_observation
        self._results: queue.Queue[Observation | tuple[str, BaseException] | str] = queue.Queue()
        # shared with the other targets' schedulers of a --config run; else this run's own
        self._limiter = limiter if limiter is not None else HostLimiter(max_per_host)
        self._jobs: list[Job] = []
        self._started: set[str] = set()  # job names; a name is started once
        self._closed = False  # collect() is over: nothing more starts

    def start(self, jobs: Sequence[Job]) -> None:
        """Start ``jobs`` (also from ``on_observation``, while ``collect`` runs)."""
        for job in jobs:
            if job.name in self._started or self._closed:
                continue
            lock = None
            if job.host is not None:
                lock = self._limiter.semaphore(_lock_key(job))
            self._jobs.append(job)
            self._started.add(job.name)
            if job.inline:
                self._work(job, lock)
                continue
            threading.Thread(
                target=self._work, args=(job, lock), name=f"maildiag:{job.name}", daemon=True
            ).start()

    def _work(self, job: Job, lock: threading.Semaphore | None) -> None:
        results = self._results
        try:
            if lock is not None:
                lock.acquire()
            try:
                job.work(results.put)
            finally:
                if lock is not None:
                    lock.release()
        except BaseException as exc:  # noqa: BLE001 - reported as an internal error below
            results.put((job.name, exc))
        finally:
            results.put(job.name)  # done marker

    def collect(self, deadline: float) -> list[Observation]:
        """Observations of all started jobs, in completion order; missing ones filled in."""
        on_observation = self.on_observation
        results = self._results
        end = time.monotonic() + deadline
        finished: set[str] = set()
        seen: list[Observation] = []
        errors: dict[str, BaseException] = {}
        while self._started - finished:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = results.get(timeout=remaining)
            except queue.Empty:
                break
            if isinstance(item, str):
                finished.add(item)
            elif isinstance(item, tuple):
                errors[item[0]] = item[1]
            else:
                seen.append(item)
                if on_observation is not None:
                    on_observation(item)

        self._closed = True  # what the fill-ins below set off would outlive the run: not started
        pending = self._started - finished
        have = {(o.check, o.target) for o in seen}
        for job in list(self._jobs):
            missing = [c for c in job.expected if (c, job.target) not in have]
            for i, check in enumerate(missing):
                if i == 0 and job.name in errors:
                    exc = errors[job.name]
                    text = f"{type(exc).__name__}: {exc}"
                    obs = Observation(
                        check,
                        Status.FAIL,
                        Summary("internal_error", {"error": text}),
                        job.target,
                        {"internal_error": text},
                        (Problem("check.internal_error", text, {"error": text}),),
                    )
                elif i == 0 and job.name in pending:
                    obs = Observation(
                        check,
                        Status.FAIL,
                        Summary("run.deadline", {"deadline": f"{deadline:g}"}),
                        job.target,
                        {},
                        (
                            Problem(
                                "connect.timeout",
                                "",
                                {"timeout": f"{deadline:g}", **_target_params(job.target)},
                            ),
                        ),
                    )
                else:
                    obs = Observation(check, Status.SKIP, Summary("skip.unfinished"), job.target)
                seen.append(obs)
                if on_observation is not None:
                    on_observation(obs)
        return seen


def _lock_key(job: Job) -> tuple[str, str]:
    return (job.host or "", str(job.target.service) if job.target is not None else "")


def _target_params(target: Target | None) -> dict[str, object]:
    if target is None:
        return {}
    return {"service": str(target.service), "host": target.host, "port": target.port}
