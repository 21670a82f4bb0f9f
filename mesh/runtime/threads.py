"""Threads for sync handlers: a call that outlives its timeout is abandoned, not waited for.

Python cannot stop a thread. ``asyncio.wait_for`` over ``run_in_executor`` stops
*waiting* at the timeout while the thread runs on and keeps its pool slot, so a few
dozen hung calls (an LLM client without a timeout of its own) starved the pool: healthy
events timed out in its queue and were dead-lettered, and the pool's threads, joined at
interpreter exit, kept a SIGTERMed process alive.

Here a handler's timeout starts when its call starts, never in the queue. A thread whose
call timed out is *stuck*: it is replaced by a new one, up to ``max_replaced`` at a time,
and leaves once its call returns (its result is dropped). Past that bound the pool runs
with fewer threads, which :attr:`HandlerThreads.degraded` reports (``/readyz``). Every
thread is a daemon: the process exits without waiting for a stuck call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HandlerThreads"]

log = logging.getLogger(__name__)


class _Call:
    __slots__ = (
        "args",
        "context",
        "done",
        "fn",
        "loop",
        "replaced",
        "started",
        "state",
        "timed_out",
    )

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()  # the event's log fields go along
        self.loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = self.loop.create_future()
        self.done: asyncio.Future[Any] = self.loop.create_future()
        self.state = "queued"  # -> running -> finished, or queued -> cancelled
        self.timed_out = False  # its thread is stuck in it
        self.replaced = False  # ... and was replaced by a new one: it leaves afterwards


class HandlerThreads:
    """*size* daemon threads running sync handlers, replacing those stuck past a timeout."""

    def __init__(self, size: int, *, max_replaced: int | None = None) -> None:
        self._size = size
        self._max_replaced = size if max_replaced is None else max_replaced
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # serving the queue, or back to it once their call returns
        self._stuck = 0  # running a call that timed out
        self._replaced = 0  # stuck threads that leave when their call returns

    @property
    def stuck(self) -> int:
        """Threads running a call whose timeout passed (``mesh_handler_threads_stuck``)."""
        return self._stuck

    @property
    def degraded(self) -> bool:
        """Stuck threads exceed what replacements cover: fewer than *size* threads serve."""
        return self._stuck > self._replaced

    async def run(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None) -> Any:
        """``fn(*args)`` on a thread; TimeoutError once it ran for *timeout_s* seconds."""
        call = _Call(fn, args)
        self._grow()
        self._queue.put(call)
        try:
            await call.started
        except asyncio.CancelledError:
            with self._lock:
                if call.state == "queued":
                    call.state = "cancelled"  # never started: the thread skips it
            raise
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(call.done)
        except TimeoutError:
            self._abandon(call)
            raise

    def close(self) -> None:
        """Let idle threads leave; stuck ones leave when their call returns."""
        with self._lock:
            threads, self._threads = self._threads, 0
        for _ in range(threads):
            self._queue.put(None)

    def _grow(self) -> None:
        with self._lock:
            if self._threads >= self._size:
                return
            self._threads += 1
        threading.Thread(target=self._serve, name="mesh-handler", daemon=True).start()

    def _abandon(self, call: _Call) -> None:
        with self._lock:
            if call.state != "running":
                return  # it finished just as the timeout fired
            call.timed_out = True
            self._stuck += 1
            if self._replaced < self._max_replaced:
                self._replaced += 1
                call.replaced = True
                self._threads -= 1  # it leaves the count: _grow starts its replacement
            stuck, replaced = self._stuck, call.replaced
        self._grow()
        if replaced:
            log.warning("a sync handler outlived its timeout: thread abandoned (%d stuck)", stuck)
        else:
            log.error(
                "a sync handler outlived its timeout and %d threads are stuck: "
                "handlers now run on fewer threads until they return",
                stuck,
            )

    def _serve(self) -> None:
        while (call := self._queue.get()) is not None:
            with self._lock:
                if call.state == "cancelled":
                    continue
                call.state = "running"
            call.loop.call_soon_threadsafe(_settle, call.started, None, None)
            result, error = None, None
            try:
                result = call.context.run(call.fn, *call.args)
            except BaseException as exc:
                error = exc
            with self._lock:
                call.state = "finished"
                if call.timed_out:
                    self._stuck -= 1
                    self._replaced -= call.replaced
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                call.loop.call_soon_threadsafe(_settle, call.done, result, error)
            if call.replaced:
                return


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
