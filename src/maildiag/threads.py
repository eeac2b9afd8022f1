"""A thread pool whose workers never keep the process alive.

``concurrent.futures.ThreadPoolExecutor`` joins its workers when the interpreter exits, so one
worker stuck in a network call (a server that drips its answer a byte at a time) keeps maildiag
running after the report is printed. ``DaemonPool`` offers the same ``submit``/``shutdown`` with
daemon workers: the run waits for them only as long as its own deadline says, and the process
ends when ``main`` returns, whatever a worker is still waiting for.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonPool:
    """At most ``max_workers`` daemon threads running the submitted calls, first come first."""

    def __init__(self, max_workers: int, name: str = "maildiag") -> None:
        self.max_workers = max(1, max_workers)
        self.name = name
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._futures: list[Future[Any]] = []
        self._workers = 0
        # calls submitted and not yet taken, and workers waiting for one; a worker updates both
        # together once it has a call, so a submit never counts a busy worker as idle
        self._queued = 0
        self._idle = 0
        self._closed = False

    def __enter__(self) -> DaemonPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("submit after shutdown")
            self._futures.append(future)
            self._tasks.put((future, fn, args, kwargs))
            self._queued += 1
            if self._queued > self._idle and self._workers < self.max_workers:
                self._workers += 1
                name = f"{self.name}-{self._workers}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            task = self._tasks.get()
            with self._lock:
                self._idle -= 1
                if task is not None:
                    self._queued -= 1
            if task is None:
                return
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions. ``cancel_futures``: calls not started yet never start;
        ``wait``: wait for the others (each is bounded by its own network timeouts)."""
        with self._lock:
            self._closed = True
            futures = list(self._futures)
            workers = self._workers
        if cancel_futures:
            for future in futures:
                future.cancel()  # only a call that has not started can be cancelled
        for _ in range(workers):
            self._tasks.put(None)  # after the queued calls: each worker ends when it gets one
        if wait:
            wait_for(futures)


def wait_for(futures: list[Future[Any]], timeout: float | None = None) -> None:
    """Wait until every future is done (or cancelled), or ``timeout`` seconds pass."""
    from concurrent.futures import wait

    wait(futures, timeout=timeout)
