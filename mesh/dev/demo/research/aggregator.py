"""The fan-in: a report is drafted once every finding of a request's revision is in.

The state is the findings topic itself. Findings are keyed by request, so all of a
request's findings sit in one partition in the order they were reported; the
aggregator keeps an index of the partitions it handles, filled as findings arrive and,
where it has a gap (after a restart, a rebalance, or records of other requests
handled out of order), by reading the partition back from Kafka. So a worker killed
mid-request loses nothing: whoever owns the partition next rebuilds the same index.

A draft is emitted by the one record that completes its revision: the latest of the
first reports of each subtask. Every replica of the log agrees on which record that is,
so a redelivered or duplicated finding never drafts a second time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from mesh import Context, Mesh
from mesh.dev.demo.research.events import FindingReported, ReportDrafted
from mesh.errors import DeserializationError
from mesh.headers import ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC
from mesh.kafka.clients import reader_config
from mesh.serde import Serde

__all__ = ["Aggregator"]

_READ_TIMEOUT_S = 30.0


@dataclass
class _Round:
    """The findings of one revision of one request: subtask index -> (offset, finding)."""

    total: int
    first: dict[int, tuple[int, FindingReported]] = field(default_factory=dict)

    def completed_by(self, offset: int) -> bool:
        """Whether the record at *offset* is the one that made this round complete."""
        return len(self.first) >= self.total and max(o for o, _ in self.first.values()) == offset


def _position(ctx: Context) -> tuple[str, int, int]:
    """Where the finding sits in the findings topic, also when it comes from a retry topic."""
    if ctx.topic == FindingReported.topic():
        return ctx.topic, ctx.partition, ctx.offset
    headers = ctx.headers
    return (
        headers[ORIGINAL_TOPIC].decode(),
        int(headers[ORIGINAL_PARTITION]),
        int(headers[ORIGINAL_OFFSET]),
    )


class Aggregator:
    """Handler of ``FindingReported`` (register :meth:`handle` as an agent of *app*)."""

    def __init__(self, app: Mesh) -> None:
        self._app = app
        self._next: dict[int, int] = {}  # partition -> next offset to index
        self._rounds: dict[tuple[str, int], _Round] = {}
        self._lock = asyncio.Lock()
        self._reader: Consumer | None = None
        self._serde: Serde | None = None

    async def handle(self, event: FindingReported, ctx: Context) -> ReportDrafted | None:
        topic, partition, offset = _position(ctx)
        async with self._lock:
            expected = self._next.get(partition, 0)
            if expected == offset:
                self._index(offset, event)
                self._next[partition] = offset + 1
            elif expected < offset:
                ctx.log.info("reading %s[%d] back from offset %d", topic, partition, expected)
                await asyncio.to_thread(self._read, topic, partition, expected, offset)
            round_ = self._rounds[(event.request_id, event.revision)]
            if not round_.completed_by(offset):
                return None
            findings = [finding for _, (_, finding) in sorted(round_.first.items())]
        body = "\n".join(f"{f.index + 1}. {f.summary}" for f in findings)
        return ReportDrafted(
            request_id=event.request_id,
            revision=event.revision,
            question=event.question,
            body=body,
            findings=len(findings),
        )

    def _index(self, offset: int, finding: FindingReported) -> None:
        key = (finding.request_id, finding.revision)
        round_ = self._rounds.setdefault(key, _Round(total=finding.total))
        round_.first.setdefault(finding.index, (offset, finding))

    def _read(self, topic: str, partition: int, start: int, last: int) -> None:
        """Index records *start* .. *last* of the partition (a thread; the lock is held)."""
        reader, serde = self._clients()
        reader.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + _READ_TIMEOUT_S
        position = start
        while position <= last:
            if time.monotonic() > deadline:  # the handler fails and is retried
                raise TimeoutError(f"{topic}[{partition}]: offset {last} not read back")
            for msg in reader.consume(500, timeout=0.02):
                if msg.error() is not None or msg.offset() > last:
                    continue
                position = msg.offset() + 1
                try:
                    self._index(msg.offset(), serde.decode(msg.value(), FindingReported))
                except DeserializationError:
                    continue  # not a finding: the agent's dead-letter topic has it
        self._next[partition] = max(self._next.get(partition, 0), last + 1)

    def _clients(self) -> tuple[Consumer, Serde]:
        if self._reader is None or self._serde is None:
            settings = self._app.settings
            self._serde = Serde.from_settings(settings)
            self._reader = Consumer(
                reader_config(settings, "research-aggregator", **{"auto.offset.reset": "earliest"})
            )
        return self._reader, self._serde
