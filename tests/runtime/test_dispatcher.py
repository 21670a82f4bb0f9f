"""The dispatcher without a broker: key order, commits after acks, batch isolation, middleware.

The consumer side and the producer are fakes that record what they are asked; records
are real ``confluent_kafka.Message`` objects. What reaches Kafka is tested elsewhere
against the embedded broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from mesh import Context, Event, Middleware
from mesh.config import RetryPolicy
from mesh.envelope import Envelope
from mesh.headers import DLQ_REASON
from mesh.runtime.dispatcher import Dispatcher, WorkerOptions
from mesh.runtime.failure import DeadLetterReason, ErrorKind
from mesh.runtime.metrics import Metrics
from mesh.runtime.middleware import Hooks
from mesh.runtime.publisher import Record
from mesh.runtime.retry import DeadLetter, Retry
from mesh.runtime.threads import HandlerThreads
from mesh.runtime.topology import Topology


class Ask(Event, topic="unit.asks", key="id", name="unit.Ask"):
    id: str
    n: int


class Answer(Event, topic="unit.answers", key="id", name="unit.Answer"):
    id: str
    n: int


class FakePort:
    """The poller's side: what the dispatcher stores, pauses and releases."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int, int]] = []
        self.released = 0
        self.paused: list[tuple[str, int]] = []

    def store(self, offsets: list[TopicPartition]) -> None:
        self.stored.extend((o.topic, o.partition, o.offset) for o in offsets)

    def pause(self, tp: tuple[str, int], *, window: int | None = None) -> None:
        self.paused.append(tp)

    def resume(self, tp: tuple[str, int]) -> None:
        self.paused.remove(tp)

    def release(self, count: int) -> None:
        self.released += count

    @property
    def in_flight(self) -> int:
        return 0


class FakePublisher:
    """Keeps what is sent; a test acknowledges it with :meth:`ack_all`."""

    def __init__(self) -> None:
        self.sent: list[tuple[Record, Callable[..., None]]] = []

    def encode(self, event: Event, envelope: Envelope) -> Record:
        value = json.dumps(event.model_dump()).encode()
        return Record(event.topic(), value, None, envelope.to_headers())

    def send_raw(self, topic, value, key, headers, *, on_delivery) -> None:
        self.sent.append((Record(topic, value, key, headers), on_delivery))

    def ack_all(self) -> list[Record]:
        sent, self.sent = self.sent, []
        for _, on_delivery in sent:
            on_delivery(None, None)
        return [sent_record for sent_record, _ in sent]


class JsonSerde:
    def decode(self, value: bytes, model: type[Event]) -> Event:
        return model(**json.loads(value))


def record(offset: int, key: str, n: int = 0, partition: int = 0) -> Message:
    envelope = Envelope.new_chain("unit.Ask", "test")
    value = json.dumps({"id": key, "n": n}).encode()
    return Message(
        topic=Ask.topic(),
        partition=partition,
        offset=offset,
        key=key.encode(),
        value=value,
        headers=envelope.to_headers(),
    )


def dispatcher(
    handler: Callable[..., Any],
    *,
    batch: bool = False,
    middleware: tuple[Middleware, ...] = (),
    attempts: int = 3,
    concurrency: int = 10,
) -> tuple[Dispatcher, FakePort, FakePublisher]:
    topology = Topology.of("unit", "g", [Ask], RetryPolicy(attempts=attempts).delays_ms())
    options = WorkerOptions(
        topology=topology,
        handler=handler,
        is_async=asyncio.iscoroutinefunction(handler),
        concurrency=concurrency,
        timeout_s=None,
        retry=RetryPolicy(attempts=attempts),
        batch=batch,
        batch_size=4,
        batch_wait_s=0.01,
        hooks=Hooks(middleware),
    )
    port, publisher = FakePort(), FakePublisher()
    found = Dispatcher(
        options,
        port=port,
        publisher=publisher,  # type: ignore[arg-type]
        serde=JsonSerde(),
        threads=HandlerThreads(2),
        metrics=Metrics().agent("unit"),
        on_fatal=lambda exc: pytest.fail(f"worker failed: {exc!r}"),
    )
    found.assign([(Ask.topic(), 0)])
    return found, port, publisher


async def settle() -> None:
    """Let the loop run what is ready (tasks, delivery reports, stores)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_same_key_runs_in_order_and_other_keys_concurrently() -> None:
    async def main() -> None:
        started: list[int] = []
        gates = {n: asyncio.Event() for n in range(3)}

        async def handler(event: Ask, ctx: Context) -> None:
            started.append(event.n)
            await gates[event.n].wait()

        d, _, _ = dispatcher(handler)
        d.accept([record(0, "a", 0), record(1, "a", 1), record(2, "b", 2)])
        await settle()
        assert started == [0, 2]  # a's second event waits for its first; b runs
        gates[0].set()
        await settle()
        assert started == [0, 2, 1]
        gates[1].set()
        gates[2].set()
        await settle()

    asyncio.run(main())


def test_an_offset_is_stored_only_after_its_outputs_are_acknowledged_and_never_past_a_gap() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def handler(event: Ask, ctx: Context) -> Answer:
            if event.n == 0:
                await gate.wait()
            return Answer(id=event.id, n=event.n)

        d, port, publisher = dispatcher(handler)
        d.accept([record(0, "a", 0), record(1, "b", 1)])
        await settle()
        assert port.stored == []  # offset 1's output is not acknowledged yet
        publisher.ack_all()
        await settle()
        assert port.stored == []  # offset 1 is done, offset 0 is not: nothing to commit
        gate.set()
        await settle()
        publisher.ack_all()
        await settle()
        assert port.stored == [(Ask.topic(), 0, 2)]
        assert port.released == 2

    asyncio.run(main())


def test_a_failing_event_of_a_batch_is_isolated_and_the_others_emit() -> None:
    async def main() -> None:
        calls: list[list[int]] = []

        async def handler(events: list[Ask]) -> list[Answer]:
            calls.append([e.n for e in events])
            if any(e.n == 2 for e in events):
                raise ValueError("bad event 2")
            return [Answer(id=e.id, n=e.n * 10) for e in events]

        d, port, publisher = dispatcher(handler, batch=True)
        d.accept([record(i, f"k{i}", i) for i in range(4)])
        await settle()
        sent = publisher.ack_all()
        await settle()
        assert calls[0] == [0, 1, 2, 3]
        assert calls[1:] == [[0, 1], [2, 3], [2], [3]]  # by halves, down to the one that fails
        outputs = sorted(json.loads(r.value)["n"] for r in sent if r.topic == Answer.topic())
        assert outputs == [0, 10, 30]
        retried = [r for r in sent if r.topic == "unit.asks.g.retry.1s"]
        assert [json.loads(r.value)["n"] for r in retried] == [2]
        assert port.stored == [(Ask.topic(), 0, 4)]

    asyncio.run(main())


def test_a_batch_result_of_the_wrong_length_fails_its_events() -> None:
    async def main() -> None:
        def handler(events: list[Ask]) -> list[Answer]:
            return []

        d, _, publisher = dispatcher(handler, batch=True, attempts=1)
        d.accept([record(0, "a")])
        await asyncio.sleep(0.1)  # a sync handler runs on a thread
        sent = publisher.ack_all()
        assert [r.topic for r in sent] == ["unit.asks.g.dlq"]
        assert dict(sent[0].headers)[DLQ_REASON] == b"exhausted"

    asyncio.run(main())


def test_middleware_sees_every_event_and_may_decide_where_a_failure_goes() -> None:
    seen: list[str] = []

    class Watch(Middleware):
        def before_handle(self, ctx: Context, event: Event) -> None:
            seen.append(f"before {ctx.offset}")

        def after_handle(self, ctx, event, outputs, seconds) -> None:
            seen.append(f"after {ctx.offset} {len(outputs)}")

        def on_failure(self, ctx, error, seconds) -> None:
            seen.append(f"failed {ctx.offset} {type(error).__name__}")

        def decide(self, ctx, error, kind) -> DeadLetter | None:
            if isinstance(error, KeyError):
                return DeadLetter(ErrorKind.FATAL, DeadLetterReason.FATAL)
            return None

    async def main() -> None:
        async def handler(event: Ask, ctx: Context) -> Answer:
            if event.n == 1:
                raise KeyError("no such thing")
            return Answer(id=event.id, n=event.n)

        d, _, publisher = dispatcher(handler, middleware=(Watch(),))
        d.accept([record(0, "a", 0), record(1, "b", 1)])
        await settle()
        sent = publisher.ack_all()
        dead = [r for r in sent if r.topic == "unit.asks.g.dlq"]
        assert [dict(r.headers)[DLQ_REASON] for r in dead] == [b"fatal"]

    asyncio.run(main())
    assert seen == ["before 0", "after 0 1", "before 1", "failed 1 KeyError"]


def test_a_middleware_retry_without_a_retry_topic_is_left_to_the_policy() -> None:
    class Soon(Middleware):
        def decide(self, ctx, error, kind) -> Retry:
            return Retry(delay_ms=123, due_ms=0)  # the policy has no 123 ms retry topic

    async def main() -> None:
        async def handler(event: Ask, ctx: Context) -> None:
            raise ValueError("again")

        d, _, publisher = dispatcher(handler, middleware=(Soon(),))
        d.accept([record(0, "a")])
        await settle()
        assert [r.topic for r in publisher.ack_all()] == ["unit.asks.g.retry.1s"]

    asyncio.run(main())


def test_a_before_hook_that_raises_in_a_batch_fails_its_event_only() -> None:
    class Refuse(Middleware):
        def before_handle(self, ctx: Context, event: Event) -> None:
            if ctx.offset == 1:
                raise PermissionError("over budget")

    async def main() -> None:
        async def handler(events: list[Ask]) -> list[Answer]:
            return [Answer(id=e.id, n=e.n) for e in events]

        d, port, publisher = dispatcher(handler, batch=True, middleware=(Refuse(),))
        d.accept([record(i, f"k{i}", i) for i in range(3)])
        await settle()
        sent = publisher.ack_all()
        await settle()
        assert sorted(json.loads(r.value)["n"] for r in sent if r.topic == Answer.topic()) == [0, 2]
        assert [json.loads(r.value)["n"] for r in sent if "retry" in r.topic] == [1]
        assert port.stored == [(Ask.topic(), 0, 3)]

    asyncio.run(main())
