"""Runtime throughput: a mesh agent against hand-written confluent-kafka loops, in one run.

Scenario 1 (CPU-bound pipeline): consume, decode (fastavro), trivial transform, encode,
produce, commit after acks. (a) is the hand-written loop, (b) the same pipeline as a
mesh agent with all its guarantees on. Prints events/s for each and the ratio b/a.
(c) is (a) doing by hand the per-event work mesh's contract asks (typed models in and
out, six envelope headers with fresh ids): b/c is what mesh's runtime itself costs, c/a
what the contract costs in any Python implementation. (d) is the same agent as a batch
agent (``list[Order]`` in, a list out, batches of 500): d/a.

Scenario 2 (slow handlers, the LLM-like agents mesh exists for): each handler awaits
500 ms; 3 partitions, one process, records keyed by 1,000 customers, the same concurrency
(500) on both sides. (a) a plain asyncio loop with a semaphore and contiguous commits (no
key order), (b) a mesh agent (per-key order, commits after acks). Measured sustained
(10,000 events) and as a burst (2,000 events), each side from its first handled event to
its last (mesh's run still waits until every offset is committed).

Both start their own broker and registry through mesh.dev.stack and use the same data::

    python bench/runtime_bench.py [--events 200000] [--slow-events 10000] [--only slow]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import struct
import sys
import tempfile
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from random import getrandbits

import fastavro
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mesh import Context, Event, Mesh, Settings
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.kafka.topics import TopicSpec, ensure_topics
from mesh.schema.files import generate_schemas

GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class Order(Event, topic="bench.orders", key="order_id", name="bench.Order"):
    order_id: str
    customer: str
    amount_cents: int
    note: str
    created_at: datetime


class Priced(Event, topic="bench.priced", key="order_id", name="bench.Priced"):
    order_id: str
    customer: str
    amount_cents: int
    note: str
    created_at: datetime


def orders_on(topic: str) -> type[Order]:
    """The order event on a topic of its own (the same schema, a fresh topic per run)."""

    class TopicOrder(Order, topic=topic, key="order_id", name="bench.Order"):
        pass

    return TopicOrder


def transform(record: dict) -> dict:
    return {**record, "note": record["note"].upper(), "amount_cents": record["amount_cents"] + 1}


def fill(
    bootstrap: str, registry: str, topic: str, count: int, partitions: int, *, keys: int = 0
) -> None:
    """*count* orders, keyed by order id (all distinct) or, with *keys*, by customer."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, [TopicSpec(topic, partitions)])
    client = SchemaRegistryClient({"url": registry})
    schema_id = client.register_schema(
        f"{topic}-value", Schema(json.dumps(Order.avro_schema()), "AVRO")
    )
    parsed = fastavro.parse_schema(Order.avro_schema())
    header = struct.pack(">bI", 0, schema_id)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    now = datetime.now(UTC)
    for i in range(count):
        buf = io.BytesIO()
        buf.write(header)
        record = {
            "order_id": f"o-{i}",
            "customer": f"c-{i % (keys or 1000)}",
            "amount_cents": i,
            "note": "thank you for your order",
            "created_at": now,
        }
        fastavro.schemaless_writer(buf, parsed, record)
        while True:
            try:
                key = record["customer"] if keys else record["order_id"]
                producer.produce(topic, buf.getvalue(), key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()


def contract_step(msg: Message, record: dict) -> tuple[dict, list[tuple[str, bytes]]]:
    """The per-event work of mesh's contract, written by hand (see baseline_pipeline)."""
    event = Order.model_construct(**record)
    out = Priced(
        order_id=event.order_id,
        customer=event.customer,
        amount_cents=event.amount_cents + 1,
        note=event.note.upper(),
        created_at=event.created_at,
    )
    found = dict(msg.headers() or ())
    cause = found.get("mesh.event-id") or f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()
    trace = found.get("traceparent") or f"00-{uuid.uuid4().hex}-{0:016x}-01".encode()
    headers = [
        ("mesh.event-id", uuid.uuid4().hex.encode()),
        ("mesh.event-type", b"bench.Priced"),
        ("mesh.correlation-id", found.get("mesh.correlation-id") or cause),
        ("mesh.causation-id", cause),
        ("traceparent", trace[:36] + f"{getrandbits(64):016x}".encode() + trace[52:]),
        ("mesh.produced-by", b"pricer"),
    ]
    return out.__dict__, headers


def committed_total(probe: Consumer, topic: str, partitions: int) -> int:
    tps = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


# -- (a) hand-written loops ------------------------------------------------------------


def baseline_pipeline(
    bootstrap: str, registry: str, source: str, sink: str, count: int, *, contract: bool = False
) -> float:
    """The hand-written loop; with *contract*, it also does what mesh must do per event.

    That is: the input as an ``Order`` model and the output as a validated ``Priced``
    model (the handler mesh runs), and the six envelope headers on the output, with a
    fresh event id and span id and the input's correlation id. Still a tight loop with
    one flush and commit per batch: no concurrency, no per-event acknowledgement.
    """
    client = SchemaRegistryClient({"url": registry})
    out_id = client.register_schema(
        f"{sink}-value", Schema(json.dumps(Priced.avro_schema()), "AVRO")
    )
    out_header = struct.pack(">bI", 0, out_id)
    writers: dict[int, dict] = {}
    out_schema = fastavro.parse_schema(Priced.avro_schema())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **GROUP_CONFIG,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    consumer.subscribe([source])
    done = 0
    started = None
    while done < count:
        batch = consumer.consume(1000, timeout=0.1)
        if not batch:
            continue
        started = started or time.perf_counter()
        for msg in batch:
            value = msg.value()
            schema_id = struct.unpack(">I", value[1:5])[0]
            if schema_id not in writers:
                writers[schema_id] = fastavro.parse_schema(
                    json.loads(client.get_schema(schema_id).schema_str)
                )
            record = fastavro.schemaless_reader(io.BytesIO(value[5:]), writers[schema_id], None)
            headers = None
            if contract:
                record, headers = contract_step(msg, record)
            else:
                record = transform(record)
            buf = io.BytesIO()
            buf.write(out_header)
            fastavro.schemaless_writer(buf, out_schema, record)
            while True:
                try:
                    producer.produce(sink, buf.getvalue(), msg.key(), headers=headers)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush()  # commit only after every output was acknowledged
        consumer.commit(asynchronous=True)
        done += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


async def baseline_slow(
    bootstrap: str, source: str, count: int, partitions: int, concurrency: int
) -> float:
    """A plain asyncio loop: a semaphore of *concurrency*, contiguous commits per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"slow-baseline-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **GROUP_CONFIG,
        }
    )
    consumer.subscribe([source])
    sem = asyncio.Semaphore(concurrency)
    pending: dict[int, deque[int]] = {p: deque() for p in range(partitions)}
    finished: dict[int, set[int]] = {p: set() for p in range(partitions)}
    done = 0
    started = None

    async def handle(partition: int, offset: int) -> None:
        nonlocal done
        await asyncio.sleep(0.5)
        finished[partition].add(offset)
        queue = pending[partition]
        advanced = None
        while queue and queue[0] in finished[partition]:
            advanced = queue.popleft()
        if advanced is not None:
            consumer.commit(
                offsets=[TopicPartition(source, partition, advanced + 1)], asynchronous=True
            )
        done += 1
        sem.release()

    tasks = set()
    while done < count:
        msg = consumer.poll(0)
        if msg is None:
            await asyncio.sleep(0.005)
            continue
        started = started or time.perf_counter()
        await sem.acquire()
        pending[msg.partition()].append(msg.offset())
        task = asyncio.ensure_future(handle(msg.partition(), msg.offset()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


# -- (b) mesh ----------------------------------------------------------------------------


def price(event: Order) -> Priced:
    return Priced(
        order_id=event.order_id,
        customer=event.customer,
        amount_cents=event.amount_cents + 1,
        note=event.note.upper(),
        created_at=event.created_at,
    )


def mesh_rate(
    settings: Settings,
    schemas: Path,
    count: int,
    *,
    slow: bool,
    concurrency: int | None,
    source: type[Order] = Order,
    batch: bool = False,
) -> float:
    app = Mesh(f"bench-{uuid.uuid4().hex[:8]}", settings=settings, schemas_dir=schemas)
    marks: list[float] = []
    last = [0.0]

    if slow:

        @app.agent("pricer", consumes=source, concurrency=concurrency)
        async def slow_pricer(event: Order, ctx: Context) -> None:
            marks.append(time.perf_counter()) if not marks else None
            await asyncio.sleep(0.5)
            last[0] = time.perf_counter()  # the end, as (a) counts it: the last one handled

    elif batch:

        @app.agent("pricer", consumes=source, batch_size=500)
        async def batch_pricer(events: list[Order]) -> list[Priced]:
            marks.append(time.perf_counter()) if not marks else None
            return [price(event) for event in events]

    else:

        @app.agent("pricer", consumes=source, concurrency=concurrency)
        async def pricer(event: Order, ctx: Context) -> Priced:
            marks.append(time.perf_counter()) if not marks else None
            return price(event)

    group = app.group_id("pricer")
    partitions = settings.topics.partitions

    async def main() -> float:
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop=stop, consumer_config=GROUP_CONFIG))
        loop = asyncio.get_running_loop()
        probe = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
        while True:
            await asyncio.sleep(0.2)
            total = await loop.run_in_executor(
                None, committed_total, probe, source.topic(), partitions
            )
            if total >= count:
                break
            if serving.done():
                serving.result()
        ended = time.perf_counter()
        probe.close()
        stop.set()
        await serving
        # Both sides stop at their last handled event (mesh's run still waits until every
        # offset is committed); the fast scenario counts to the commits, as its loop does.
        return count / ((last[0] if slow else ended) - marks[0])

    return asyncio.run(main())


def fast_scenario(
    bootstrap: str, registry: str, settings: Settings, schemas: Path, args: argparse.Namespace
) -> None:
    print(f"scenario 1: {args.events} events, {args.partitions} partitions")
    fill(bootstrap, registry, Order.topic(), args.events, args.partitions)
    base = baseline_pipeline(bootstrap, registry, Order.topic(), "bench.baseline-out", args.events)
    print(f"  (a) hand-written loop: {base:10,.0f} events/s")
    floor = baseline_pipeline(
        bootstrap, registry, Order.topic(), "bench.contract-out", args.events, contract=True
    )
    print(
        f"  (c) (a) + mesh's per-event contract (models, envelope headers): "
        f"{floor:,.0f} events/s, {floor / base:.2f} of (a)"
    )
    ours = mesh_rate(settings, schemas, args.events, slow=False, concurrency=args.concurrency)
    print(f"  (b) mesh agent:        {ours:10,.0f} events/s")
    print(f"  ratio b/a: {ours / base:.2f} (target >= 0.35); b/c: {ours / floor:.2f} (>= 0.8)")
    batched = mesh_rate(settings, schemas, args.events, slow=False, concurrency=None, batch=True)
    print(f"  (d) mesh batch agent:  {batched:10,.0f} events/s")
    print(f"  ratio d/a: {batched / base:.2f} (target >= 0.6)")


def slow_scenario(
    bootstrap: str,
    registry: str,
    settings: Settings,
    schemas: Path,
    args: argparse.Namespace,
    label: str,
    count: int,
) -> None:
    concurrency = args.slow_concurrency
    print(
        f"scenario 2 ({label}): {count} events over {args.keys} keys, handlers await 500 ms, "
        f"concurrency {concurrency} on both sides"
    )
    source = orders_on(f"bench.slow-{uuid.uuid4().hex[:6]}")
    fill(bootstrap, registry, source.topic(), count, args.partitions, keys=args.keys)
    base = asyncio.run(
        baseline_slow(bootstrap, source.topic(), count, args.partitions, concurrency)
    )
    print(f"  (a) asyncio + semaphore, no key order: {base:8,.0f} events/s")
    ours = mesh_rate(settings, schemas, count, slow=True, concurrency=concurrency, source=source)
    print(f"  (b) mesh agent, key order kept:        {ours:8,.0f} events/s")
    print(f"  ratio b/a: {ours / base:.2f} (target >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    # Long enough for a sustained figure: mesh commits every auto.commit.interval.ms (1 s),
    # and the run ends when the last commit is seen, which weighs on a 6-second run.
    parser.add_argument("--slow-events", type=int, default=10_000)
    parser.add_argument("--burst-events", type=int, default=2_000)
    parser.add_argument("--keys", type=int, default=1_000, help="keys of the slow scenario")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--slow-concurrency", type=int, default=500, help="on both sides")
    parser.add_argument("--only", choices=["fast", "slow"], help="run one scenario")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    broker = start_broker(port=free_port(), log_dir=workdir)
    registry = start_registry(bootstrap_servers=broker.url, port=free_port(), log_dir=workdir)
    schemas = workdir / "schemas"
    generate_schemas([Order, Priced], schemas)
    try:
        os.environ.pop("MESH_CONFIG", None)
        settings = Settings(
            bootstrap_servers=broker.url,
            registry_url=registry.url,
            topics={"partitions": args.partitions},
        )
        if args.only != "slow":
            fast_scenario(broker.url, registry.url, settings, schemas, args)
        if args.only != "fast":
            for label, count in (("sustained", args.slow_events), ("burst", args.burst_events)):
                slow_scenario(broker.url, registry.url, settings, schemas, args, label, count)
    finally:
        registry.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
