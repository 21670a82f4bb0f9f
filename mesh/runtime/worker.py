"""One agent's worker: a poller (the consumer's thread) and a dispatcher (the loop's side).

The :class:`~mesh.runtime.poller.Poller` fetches, pauses and commits; the
:class:`~mesh.runtime.dispatcher.Dispatcher` runs the handlers, sends their outputs and
decides which offsets may be committed. They meet here: the poll thread's callbacks
cross to the loop (records with one ``call_soon_threadsafe`` per batch, rebalances by
waiting for the loop), and the dispatcher's requests (store offsets, pause or resume a
partition) go to the poller's outbox.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import Consumer, Message

from mesh.runtime.dispatcher import Dispatcher, WorkerOptions
from mesh.runtime.metrics import AgentMetrics
from mesh.runtime.poller import TP, PollCallbacks, Poller
from mesh.runtime.publisher import Publisher
from mesh.runtime.threads import HandlerThreads
from mesh.serde import Serde

__all__ = ["AgentWorker", "WorkerOptions"]

log = logging.getLogger(__name__)


class AgentWorker:
    """Consumes the topics of one agent in one consumer group."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        consumer_config: dict[str, Any],
        publisher: Publisher,
        serde: Serde,
        threads: HandlerThreads,
        metrics: AgentMetrics,
    ) -> None:
        self.options = options
        self._loop = asyncio.get_running_loop()
        # Handlers run at most `concurrency` events at once; twice as many records are
        # buffered, so that records waiting behind a busy key never leave a slot idle.
        buffer = 2 * max(options.concurrency, options.batch_size if options.batch else 0)
        self._poller = Poller(
            Consumer(consumer_config),
            PollCallbacks(
                records=self._records,
                assigned=self._assigned,
                revoked=self._revoked,
                lost=self._lost,
                failed=self._poll_failed,
            ),
            name=options.agent,
            buffer=buffer,
            batch_size=options.poll_batch,
            retry_topics=options.topology.retries,
            metrics=metrics,
        )
        self._dispatcher = Dispatcher(
            options,
            port=self._poller,
            publisher=publisher,
            serde=serde,
            threads=threads,
            metrics=metrics,
            on_fatal=self._fatal,
        )
        #: Set when the worker stops of its own accord (a failure); the app then stops.
        self.stopping = asyncio.Event()

    def start(self) -> None:
        """Subscribe and start polling; the running loop runs the handlers."""
        self._poller.start(list(self.options.topology.consumed))

    @property
    def failed(self) -> BaseException | None:
        """A failure (a delivery the broker refused, mesh failing around a handler): the
        worker stops without committing past it."""
        return self._dispatcher.fatal

    async def stop(self) -> None:
        """Stop taking events, let in-flight ones finish (bounded), commit, leave the group."""
        loop = asyncio.get_running_loop()
        log.info(
            "agent %s: stopping, %d event(s) in flight",
            self.options.agent,
            self._poller.in_flight,
        )
        await loop.run_in_executor(None, self._poller.stop)
        await self._dispatcher.drain(self._dispatcher.partitions)
        await loop.run_in_executor(None, self._poller.close)
        log.info("agent %s: stopped: offsets committed, left the group", self.options.agent)

    def _fatal(self, error: BaseException) -> None:
        log.error("agent %s: stopping: %r", self.options.agent, error, exc_info=error)
        self.stopping.set()

    # -- poll thread -> loop ---------------------------------------------------------

    def _records(self, batch: list[Message]) -> None:
        self._loop.call_soon_threadsafe(self._dispatcher.accept, batch)

    def _assigned(self, tps: list[TP]) -> None:
        self._on_loop(self._assign(tps))

    async def _assign(self, tps: list[TP]) -> None:
        self._dispatcher.assign(tps)

    def _revoked(self, tps: set[TP]) -> None:
        self._on_loop(self._dispatcher.drain(tps), self.options.drain_timeout_s + 5)

    def _lost(self, tps: set[TP]) -> None:
        self._on_loop(self._lose(tps))

    async def _lose(self, tps: set[TP]) -> None:
        self._dispatcher.lose(tps)

    def _poll_failed(self, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._dispatcher.fail, error)

    def _on_loop(self, coro: Any, timeout_s: float | None = None) -> None:
        """Run *coro* on the loop and wait for it (poll thread)."""
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)
