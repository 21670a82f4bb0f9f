"""Which registry writes: a consumer group picks a candidate, the log makes it safe.

Liveness: every registry runs a consumer in the group ``<topic>-primary`` subscribed to
the single-partition topic, never committing (classic protocol, cooperative-sticky, so a
primary keeps the partition when others join). The member holding partition 0 should be
the primary. It announces itself with a ``PRIMARY`` record carrying its advertised URL;
the others forward writes to the URL of the latest announcement. The election
consumer's session timeout is short (6 s by default): Tansu holds each JoinGroup for
about half of it, and a crashed primary is replaced after about that long.

Safety does not rest on the group, which can briefly have two members believing they hold
the partition (one that lost its membership without noticing yet). It rests on the log:

* The *epoch* of an announcement is its offset, which only the node that wrote it
  learns (from the delivery report). Every record a primary writes carries its epoch in
  a header.
* A record is **valid** iff its epoch is the offset of the last ``PRIMARY`` record before
  it in the log; every reader ignores the others (records without the header count as
  valid, but a registry refuses to start on a topic holding one: another registry wrote
  it). Readers share one log, so they agree on the state: the fold of the valid records.
* A node writes with epoch *e* only after its reader has applied the log up to *e*, and
  it serialises its writes, each waiting until its reader has applied the records it
  wrote. A valid record of epoch *e* at offset *p* lies between *e* and the next
  announcement, so the valid records before *p* are those before *e* (which the node
  has applied) and its own earlier ones (applied too). Its state when it planned the
  record was therefore the exact fold of the valid records before *p*.
* It allocates ``max(id seen) + 1`` and ``max(version) + 1`` from that state. So no two
  valid records bind one id to two schemas, or one subject version to two schemas: ids
  cannot collide, whatever the group does.
* A write that failed (timed out) may still land later, among the valid records of its
  epoch but absent from the state the next write plans from. So after a failed write
  the node writes nothing more under that epoch: it announces itself again
  (:meth:`Election.renew`) and waits until its reader has applied the new announcement,
  which puts the late record either before the new epoch (applied) or after it (invalid).

A writer whose record turns out invalid (a newer announcement came first) answers
``NotPrimaryError`` and the request is forwarded to the new primary. Compaction keeps
this sound: ``PRIMARY`` keys are unique, so announcements are never compacted away and
validity is the same on the compacted log. An invalid record can still shadow a valid
one with the same key once compacted, so the primary re-writes the valid value of any key
it sees an invalid record for (:meth:`mesh.registry.service.Registry.repair`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mesh.registry import records
from mesh.registry.errors import ApiError
from mesh.registry.reader import Reader
from mesh.registry.store import Store
from mesh.registry.writer import Writer

__all__ = ["Election"]

log = logging.getLogger(__name__)

_POLL_S = 0.2
_RECHECK_S = 1.0


class Election:
    """Makes this registry the primary whenever it holds partition 0 of the group."""

    def __init__(
        self,
        *,
        kafka: Mapping[str, Any],
        topic: str,
        url: str,
        store: Store,
        reader: Reader,
        writer: Writer,
        session_timeout_ms: int,
        write_timeout_s: float,
    ) -> None:
        self.url = url
        self.node = uuid.uuid4().hex
        self._store = store
        self._reader = reader
        self._writer = writer
        self._write_timeout_s = write_timeout_s
        self._epoch: int | None = None
        self._changed = asyncio.Event()
        self._membership = _Membership(
            kafka=kafka,
            topic=topic,
            session_timeout_ms=session_timeout_ms,
            on_change=self._on_membership_change,
        )
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def epoch(self) -> int | None:
        """Our epoch while we are the primary, else None."""
        primary = self._store.primary
        if self._membership.holds and primary is not None and primary.epoch == self._epoch:
            return self._epoch
        return None

    def primary_url(self) -> str | None:
        """Where to forward writes: the latest announced primary, unless that is us."""
        primary = self._store.primary
        return None if primary is None or primary.node == self.node else primary.url

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._membership.start()
        self._task = asyncio.create_task(self._keep_primary(), name="registry-election")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self._membership.close)

    def _on_membership_change(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    async def _keep_primary(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _RECHECK_S)
            self._changed.clear()
            if self._membership.holds and self.epoch is None:
                try:
                    await self._announce()
                except ApiError as exc:
                    log.warning("cannot announce this registry as primary: %s", exc.message)
                except Exception:  # a bug must not end the election: log it, retry later
                    log.exception("announcing this registry as primary failed")

    async def renew(self) -> int | None:
        """Announce this registry again; return the new epoch (None: no longer the primary).

        After a write that failed, its records may still be appended (a stalled broker
        resumes). Under the new epoch they are invalid if they land after the new
        announcement, and in the store if before it: nothing written before can bind an id
        or a version that is planned again afterwards.
        """
        await self._announce()
        return self.epoch

    async def _announce(self) -> None:
        batch = [records.announcement(url=self.url, node=self.node)]
        (offset,) = await self._writer.produce(batch, epoch=None)
        await self._reader.wait_for(offset + 1, timeout_s=self._write_timeout_s)
        self._epoch = offset
        if self.epoch is not None:
            log.info("this registry is the primary (epoch %d)", offset)


class _Membership:
    """The group member: a thread polling a consumer that only tracks its assignment."""

    def __init__(
        self,
        *,
        kafka: Mapping[str, Any],
        topic: str,
        session_timeout_ms: int,
        on_change: Callable[[], None],
    ) -> None:
        self._topic = topic
        self._on_change = on_change
        self._consumer = Consumer(
            {
                **kafka,
                "group.id": f"{topic}-primary",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(100, session_timeout_ms // 6),
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
            }
        )
        self._assigned: set[int] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-election", daemon=True)

    @property
    def holds(self) -> bool:
        return 0 in self._assigned

    def start(self) -> None:
        self._consumer.subscribe(
            [self._topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread.ident is None:  # never started
            self._consumer.close()
        else:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._consumer.poll(_POLL_S)  # records are not wanted; the partition is paused
        except KafkaException:
            log.exception("the primary election consumer of %s stopped", self._topic)
        finally:
            self._assigned.clear()
            self._on_change()
            self._consumer.close()  # leaves the group: another registry takes over at once

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        self._assigned |= {tp.partition for tp in partitions}
        self._on_change()

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {tp.partition for tp in partitions}
        self._on_change()
