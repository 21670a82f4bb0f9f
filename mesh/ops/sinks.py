"""Where replayed records go: a stream of lines, another topic, or an agent's handler.

Sinks that write to Kafka are dry runs unless built with ``execute=True``: they count
what they would write and keep a sample, so the plan can be checked first.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import uuid
from typing import IO, Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from mesh import headers as h
from mesh.config import Settings
from mesh.envelope import Envelope, record_event_id
from mesh.errors import InputError
from mesh.event import Event
from mesh.kafka.clients import admin_config, producer_config
from mesh.kafka.reader import tail_record
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.ops.replay import ReplaySummary
from mesh.runtime.app import Mesh
from mesh.runtime.context import Context
from mesh.runtime.invoke import invoke, with_context
from mesh.runtime.publisher import produce
from mesh.runtime.threads import HandlerThreads
from mesh.serde import Serde

__all__ = ["AgentSink", "LineSink", "TopicSink", "raw_json"]

_SAMPLE = 5
_FLUSH_TIMEOUT_S = 30.0
_SERVE_EVERY = 5_000  # records between polls of the copy producer
_REPLAY_HEADERS = frozenset((h.REPLAY_ID, h.REPLAY_COUNT))


def raw_json(msg: Message) -> dict[str, Any]:
    """A record with key, value and header values base64-encoded: lossless, no registry."""

    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode("ascii")

    _, timestamp_ms = msg.timestamp()
    return {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": timestamp_ms if timestamp_ms >= 0 else None,
        "key": b64(msg.key()),
        "headers": [[name, b64(value)] for name, value in msg.headers() or ()],
        "value": b64(msg.value()),
    }


class LineSink:
    """One JSON object per record and line: decoded through the registry, or ``raw``."""

    dry_run = False

    def __init__(self, out: IO[str], *, fmt: Literal["json", "raw"], serde: Serde) -> None:
        self._out = out
        self._fmt = fmt
        self._serde = serde

    def write(self, msgs: list[Message], summary: ReplaySummary) -> None:
        out, serde = self._out, self._serde
        for msg in msgs:
            if self._fmt == "raw":
                line = json.dumps(raw_json(msg))
            else:
                line = tail_record(msg, serde).to_json_line()
            out.write(line + "\n")
        summary.written += len(msgs)
        out.flush()  # a reader at the other end of a pipe sees each batch as it comes

    def close(self, summary: ReplaySummary) -> None:
        self._out.flush()


class _Acks:
    """A durable producer (the runtime's settings) that counts what the broker refused.

    Only failures call back into Python (``delivery.report.only.error``): a call per
    acknowledged record was a large share of a copy's time. Nothing counts as written
    before :meth:`settle`'s flush has emptied the queue; what is left in it failed too.
    """

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(
            producer_config(
                settings, **{"delivery.report.only.error": True, "on_delivery": self._refused}
            )
        )
        self.sent = 0
        self._served = 0  # self.sent when the producer was last polled
        self._refusals: list[str] = []

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes | None]],
        partition: int = -1,
    ) -> None:
        """Queue one record; *partition* -1 lets the partitioner choose by key."""
        self.sent += 1
        try:
            produce(self.producer, topic, value, key, headers, partition=partition)
        except KafkaException as exc:  # refused before it was queued (an unknown partition)
            self._refused(exc.args[0], None)

    def serve(self) -> None:
        """Serve the refusals queued so far, every few thousand records.

        Acknowledged records queue nothing (``delivery.report.only.error``), so polling
        per batch only cost time.
        """
        if self.sent - self._served >= _SERVE_EVERY:
            self._served = self.sent
            self.producer.poll(0)

    def _refused(self, err: KafkaError, _msg: Message | None) -> None:
        self._refusals.append(err.str())

    def settle(self, summary: ReplaySummary) -> None:
        """Wait for every acknowledgement; records refused or still unacknowledged failed."""
        unanswered = self.producer.flush(_FLUSH_TIMEOUT_S)  # serves the refusals too
        failed = len(self._refusals) + unanswered
        summary.written += self.sent - failed
        summary.failed += failed
        summary.problems.extend(f"the broker refused a record: {e}" for e in self._refusals[:5])


def _ensure_topic(settings: Settings, name: str, partitions: int) -> int:
    """Create topic *name* if missing; its partition count either way."""
    admin = AdminClient(admin_config(settings))
    present = existing_topics(admin)
    if name not in present:
        defaults = settings.topics
        ensure_topics(admin, [TopicSpec(name, partitions, defaults.replication_factor)])
        return partitions
    return present[name]


class TopicSink:
    """Copies records to *target* byte for byte (key, value, headers), in the same partition.

    Each copy carries ``mesh.replay-id`` (this run) and ``mesh.replay-count`` one higher
    than the record's; a record already replayed *max_replays* times is skipped, so a
    replay loop (a topic replayed into itself, or into a topic an agent feeds back)
    stops. *target* is created with the source's partition count when missing.
    """

    def __init__(
        self,
        settings: Settings,
        target: str,
        *,
        source_partitions: int,
        max_replays: int = 3,
        execute: bool = False,
        serde: Serde | None = None,
    ) -> None:
        if max_replays < 1:
            raise InputError("--max-replays must be at least 1")
        self.dry_run = not execute
        self.replay_id = str(uuid.uuid4())
        self._replay_id = self.replay_id.encode()
        self._first_copy = [(h.REPLAY_ID, self._replay_id), (h.REPLAY_COUNT, b"1")]
        self._target = target
        self._max_replays = max_replays
        self._serde = serde or Serde.from_settings(settings)
        self._partitions = source_partitions
        self._acks: _Acks | None = None
        if execute:
            self._acks = _Acks(settings)  # first: an idempotent producer is slow to start
            self._partitions = _ensure_topic(settings, target, source_partitions)

    def write(self, msgs: list[Message], summary: ReplaySummary) -> None:
        acks = self._acks
        if acks is None:
            self._plan(msgs, summary)
            return
        copy_headers, send = self._headers, acks.send  # bound once: this loop is the copy
        target, partitions = self._target, self._partitions
        for msg in msgs:
            headers = copy_headers(msg.headers())
            if headers is None:
                summary.skipped += 1
                continue
            partition = msg.partition() or 0  # same partition, same order; else by key
            send(
                target, msg.value(), msg.key(), headers, partition if partition < partitions else -1
            )
        acks.serve()

    def _plan(self, msgs: list[Message], summary: ReplaySummary) -> None:
        """A dry run: count what would be copied, keep a sample."""
        for msg in msgs:
            if self._headers(msg.headers()) is None:
                summary.skipped += 1
                continue
            summary.written += 1
            if len(summary.sample) < _SAMPLE:
                summary.sample.append(tail_record(msg, self._serde).to_json())

    def _headers(
        self, found: list[tuple[str, bytes | None]] | None
    ) -> list[tuple[str, bytes | None]] | None:
        """The copy's headers: *found* with this run's replay id and count, or None once
        the record was replayed max_replays times."""
        if not found:
            return [*self._first_copy]
        for name, _ in found:  # a loop that stops early: the fastest check per record
            if name in _REPLAY_HEADERS:
                break
        else:  # never replayed
            return found + self._first_copy
        count = h.to_int(h.last(found, h.REPLAY_COUNT)) or 0
        if count >= self._max_replays:
            return None
        kept = [(n, v) for n, v in found if n not in _REPLAY_HEADERS]
        return [*kept, (h.REPLAY_ID, self._replay_id), (h.REPLAY_COUNT, b"%d" % (count + 1))]

    def close(self, summary: ReplaySummary) -> None:
        if self._acks is not None:
            self._acks.settle(summary)


class AgentSink:
    """Runs one agent's handler on each record, in this process, outside its consumer group.

    The live group's offsets never move: the replay reads by assignment under a fresh
    group id that never joins nor commits. What the handler emits goes to *emit_to*
    (created when missing) with ``execute``, and is otherwise written to *out* as JSON
    lines; ``written`` counts the emits. A handler that raises counts as
    failed, with the error in the summary's problems. No retries, no dead letters.
    """

    def __init__(
        self,
        settings: Settings,
        app: Mesh,
        agent: str,
        *,
        emit_to: str | None = None,
        execute: bool = False,
        out: IO[str] | None = None,
        serde: Serde | None = None,
    ) -> None:
        if agent not in app.agents:
            known = ", ".join(app.agents) or "none"
            raise InputError(f"app {app.name!r} has no agent {agent!r}; its agents are: {known}")
        if execute and emit_to is None:
            raise InputError("--to-agent --execute needs --emit-to-topic (or use --dry-run)")
        self.dry_run = not execute
        self._spec = app.agents[agent]
        self._handler = with_context(self._spec.handler)
        self._is_async = inspect.iscoroutinefunction(self._spec.handler)
        self._timeout_s = app.timeout_s(agent)
        self._threads = HandlerThreads(1)  # replay hands the handler one record at a time
        self._serde = serde or Serde.from_settings(settings)
        self._emit_to = emit_to
        self._out = out
        self._loop = asyncio.new_event_loop()
        self._acks: _Acks | None = None
        if execute and emit_to is not None:
            _ensure_topic(settings, emit_to, settings.topics.partitions)
            self._acks = _Acks(settings)

    def write(self, msgs: list[Message], summary: ReplaySummary) -> None:
        for msg in msgs:
            self._run(msg, summary)
        if self._acks is not None:
            self._acks.serve()

    def _run(self, msg: Message, summary: ReplaySummary) -> None:
        raw_headers = msg.headers() or []
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        envelope = Envelope.from_headers(
            raw_headers, fallback_event_id=record_event_id(topic, partition, offset)
        )
        ctx = Context(
            agent=self._spec.name,
            envelope=envelope,
            topic=topic,
            partition=partition,
            offset=offset,
            key=msg.key(),
            raw_headers=raw_headers,
        )
        try:
            event = self._serde.decode(msg.value(), self._model(msg))
            result = self._loop.run_until_complete(self._call(event, ctx))
            emits = ctx._finish()
            if result is not None:
                emits.extend(result if isinstance(result, list | tuple) else [result])
            # encoded before anything is sent or printed: all of a record's emits, or none
            encoded = [self._encode(out, envelope) for out in emits]
        except Exception as exc:  # the handler, its input not decoding, an emit not encoding
            ctx._finish()
            summary.failed += 1
            summary.problems.append(f"{topic}:{partition}:{offset}: {type(exc).__name__}: {exc}")
            return
        for child, key, value, data in encoded:
            if self._acks is not None and self._emit_to is not None:
                self._acks.send(self._emit_to, value, key, list(child.to_headers()))
                continue
            if self._out is not None:
                self._out.write(json.dumps(data) + "\n")
            summary.written += 1

    def _model(self, msg: Message) -> type[Event]:
        models = self._spec.consumes
        wanted = Envelope.event_type_of(msg.headers())
        return next((m for m in models if m.event_type() == wanted), models[0])

    async def _call(self, event: Event, ctx: Context) -> Any:
        ctx._bind_logs()  # on the task run_until_complete made for this event
        return await invoke(
            self._handler,
            event,
            ctx,
            is_async=self._is_async,
            timeout_s=self._timeout_s,
            threads=self._threads,
        )

    def _encode(
        self, event: Event, parent: Envelope
    ) -> tuple[Envelope, bytes, bytes | None, dict[str, Any]]:
        """An emit's envelope, key, value (for --execute) and JSON form (for a dry run)."""
        child = parent.child(event.event_type(), self._spec.name)
        key = type(event).key_of(event) or child.event_id.encode()
        value = None
        if self._acks is not None and self._emit_to is not None:  # a dry run registers nothing
            value = self._serde.encode(event, self._emit_to)
        data = {
            "emitted": child.event_type,
            "event_id": child.event_id,
            "causation_id": child.causation_id,
            "correlation_id": child.correlation_id,
            "key": key.decode("utf-8", "replace"),
            "value": event.model_dump(mode="json"),
        }
        return child, key, value, data

    def close(self, summary: ReplaySummary) -> None:
        self._loop.close()
        if self._acks is not None:
            self._acks.settle(summary)
