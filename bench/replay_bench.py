"""Replay throughput and trace latency, against hand-written loops over the same events.

1. ``mesh replay --to-stdout --format json`` (the library path the command runs, output
   to /dev/null) against a hand-written confluent-kafka consume + fastavro decode +
   ``json.dumps`` loop printing the same fields. Target ratio >= 0.8.
2. ``mesh replay --to-topic --execute`` (a byte-for-byte copy, acknowledged) against a
   raw consume of the same records that does nothing with them. Target ratio >= 0.5.
3. ``mesh trace`` of one 4-step chain (with a retry and a dead letter) hidden among
   ``--trace-events`` other events. Target < 1 s.

Both sides of a ratio read the same ``--count`` events (Avro, 5 fields, mesh envelope
headers) from the same topic, in the same run. It starts its own broker and registry::

    python bench/replay_bench.py [--count 200000] [--partitions 3] [--trace-events 10000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh import Event, headers
from mesh.config import Settings
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.envelope import Envelope
from mesh.kafka.clients import admin_config, producer_config
from mesh.kafka.topics import TopicSpec, ensure_topics
from mesh.ops.replay import plan_replay, replay
from mesh.ops.sinks import LineSink, TopicSink
from mesh.ops.trace import trace
from mesh.serde import Serde


class Reading(Event, topic="bench.readings", key="sensor", name="bench.Reading"):
    sensor: str
    seq: int
    value: float
    unit: str
    taken_at: datetime


def fill(settings: Settings, serde: Serde, topic: str, count: int, partitions: int) -> None:
    """*count* events on *topic*, each the start of its own chain."""
    ensure_topics(AdminClient(admin_config(settings)), [TopicSpec(topic, partitions)])
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 10})
    now = datetime.now(UTC)
    for n in range(count):
        event = Reading(sensor=f"s{n % 97}", seq=n, value=n / 7, unit="celsius", taken_at=now)
        envelope = Envelope.new_chain(Reading.event_type(), produced_by="bench")
        value = serde.encode(event, topic)
        while True:
            try:
                producer.produce(topic, value, event.sensor.encode(), headers=envelope.to_headers())
                break
            except BufferError:
                producer.poll(0.05)
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise SystemExit("the broker did not acknowledge the events")


def _consumer(settings: Settings, topic: str, partitions: int) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"bench-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            # The readers' setting (mesh.kafka.reader): librdkafka's 1 s default back-off after
            # a full prefetch queue made a baseline run bimodal (83k or 200k records/s).
            "fetch.queue.backoff.ms": 100,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    return consumer


def hand_written_json(settings: Settings, topic: str, count: int, partitions: int) -> float:
    """Seconds to consume, decode and print *count* events the way one would by hand."""
    schemas: dict[int, Any] = {}
    out = open(os.devnull, "w")  # noqa: SIM115 - closed below
    consumer = _consumer(settings, topic, partitions)
    started = time.monotonic()
    seen = 0
    with httpx.Client(base_url=settings.registry_url) as registry:
        while seen < count:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                raw = msg.value() or b""
                schema_id = int.from_bytes(raw[1:5], "big")
                if schema_id not in schemas:
                    text = registry.get(f"/schemas/ids/{schema_id}").json()["schema"]
                    schemas[schema_id] = fastavro.parse_schema(json.loads(text))
                value = fastavro.schemaless_reader(io.BytesIO(raw[5:]), schemas[schema_id])
                value["taken_at"] = value["taken_at"].isoformat()
                record = {
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp()[1],
                    "key": (msg.key() or b"").decode(),
                    "headers": {k: (v or b"").decode() for k, v in msg.headers() or ()},
                    "value": value,
                }
                out.write(json.dumps(record) + "\n")
                seen += 1
    elapsed = time.monotonic() - started
    consumer.close()
    out.close()
    return elapsed


def raw_consume(settings: Settings, topic: str, count: int, partitions: int) -> float:
    """Seconds to consume *count* records and do nothing with them."""
    consumer = _consumer(settings, topic, partitions)
    started = time.monotonic()
    seen = 0
    while seen < count:
        seen += sum(1 for m in consumer.consume(1000, timeout=0.5) if m.error() is None)
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed


def hand_written_copy(settings: Settings, topic: str, count: int, partitions: int) -> float:
    """Seconds to copy *count* records as one would by hand: same producer settings as
    mesh's, the two replay headers appended, no loop guard, no progress, no summary."""
    target = f"{topic}.hand-copy-{time.monotonic_ns()}"
    ensure_topics(AdminClient(admin_config(settings)), [TopicSpec(target, partitions)])
    producer = Producer(producer_config(settings))
    consumer = _consumer(settings, topic, partitions)
    replay_id = str(uuid.uuid4()).encode()
    started = time.monotonic()
    seen = 0
    while seen < count:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error() is not None:
                continue
            seen += 1
            copied = [
                *(msg.headers() or ()),
                ("mesh.replay-id", replay_id),
                ("mesh.replay-count", b"1"),
            ]
            while True:
                try:
                    producer.produce(
                        target, msg.value(), msg.key(), msg.partition(), headers=copied
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit("the broker did not acknowledge the copies")
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed


def mesh_json(settings: Settings, serde: Serde, topic: str, count: int) -> float:
    with open(os.devnull, "w") as out:
        started = time.monotonic()
        summary = replay(
            settings, plan_replay(settings, topic), LineSink(out, fmt="json", serde=serde)
        )
        elapsed = time.monotonic() - started
    assert summary.written == count, summary
    return elapsed


def mesh_copy(settings: Settings, serde: Serde, topic: str, count: int, partitions: int) -> float:
    target = f"{topic}.copy"
    started = time.monotonic()
    sink = TopicSink(settings, target, source_partitions=partitions, execute=True, serde=serde)
    summary = replay(settings, plan_replay(settings, topic), sink)
    elapsed = time.monotonic() - started
    assert (summary.written, summary.failed) == (count, 0), summary
    return elapsed


def fill_trace(settings: Settings, serde: Serde, events: int) -> str:
    """*events* unrelated events plus one 4-step chain with a retry and a dead letter;
    returns the chain's correlation id."""
    stem = "trace-bench"
    fill(settings, serde, f"{stem}.readings", events, 3)
    extra = [f"{stem}.steps", f"{stem}.steps.g.retry.1s", f"{stem}.steps.g.dlq"]
    ensure_topics(AdminClient(admin_config(settings)), [TopicSpec(t, 3) for t in extra])
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    value = serde.encode(
        Reading(sensor="x", seq=0, value=0.0, unit="c", taken_at=datetime.now(UTC)),
        f"{stem}.steps",
    )
    step = Envelope.new_chain("bench.Step", produced_by="bench")
    chain = step.correlation_id
    for n in range(4):
        producer.produce(f"{stem}.steps", value, b"x", headers=step.to_headers())
        if n == 1:
            failure = [(headers.ATTEMPT, b"1"), (headers.EXCEPTION_CLASS, b"ValueError")]
            producer.produce(extra[1], value, b"x", headers=step.to_headers() + failure)
        if n == 3:
            dead = [(headers.ATTEMPT, b"1"), (headers.EXCEPTION_CLASS, b"ValueError")]
            dead.append((headers.DLQ_REASON, b"fatal"))
            producer.produce(extra[2], value, b"x", headers=step.to_headers() + dead)
        step = step.child("bench.Step", f"agent{n}")
    producer.flush(10)
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--trace-events", type=int, default=10_000)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    broker = start_broker(port=free_port(), log_dir=log_dir)
    registry = None
    try:
        registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=log_dir)
        settings = Settings(bootstrap_servers=broker.url, registry_url=registry.url)
        serde = Serde.from_settings(settings)
        topic = "bench.readings"
        fill(settings, serde, topic, args.count, args.partitions)
        count, parts = args.count, args.partitions

        by_hand = hand_written_json(settings, topic, count, parts)
        by_mesh = mesh_json(settings, serde, topic, count)
        print(
            f"--to-stdout --format json: mesh {count / by_mesh:,.0f} events/s, "
            f"hand-written {count / by_hand:,.0f} events/s, "
            f"ratio {by_hand / by_mesh:.2f} (target >= 0.8)"
        )
        raw = raw_consume(settings, topic, count, parts)
        copy = mesh_copy(settings, serde, topic, count, parts)
        copy_by_hand = hand_written_copy(settings, topic, count, parts)
        print(
            f"--to-topic --execute: mesh {count / copy:,.0f} records/s, "
            f"raw consume {count / raw:,.0f} records/s, ratio {raw / copy:.2f} (target >= 0.5); "
            f"hand-written copy {count / copy_by_hand:,.0f} records/s "
            f"({raw / copy_by_hand:.2f} of raw consume)"
        )

        chain = fill_trace(settings, serde, args.trace_events)
        found = trace(settings, chain, topics=["trace-bench.*"])
        assert found.steps == 4, found.to_json()
        print(
            f"trace: {found.steps} steps among {found.scanned:,} events in {found.topics} "
            f"topics: {found.seconds:.3f} s (target < 1 s)"
        )
    finally:
        if registry is not None:
            registry.stop()
        broker.stop()


if __name__ == "__main__":
    main()
