"""Schema registry: start-up over a full ``_schemas`` topic, and cached reads by id, in one run.

1. Fills a fresh state topic with ``--records`` records in the registry's own format
   (schema versions over many subjects, some soft deletes and per-subject configs), then
   starts ``mesh registry serve`` on it and times launch-to-ready (``GET /`` answers 200:
   the process has started, read the whole topic and opened its port). Target <= 5 s.
2. ``GET /schemas/ids/{id}`` over those ids from ``--connections`` concurrent aiohttp
   connections for ``--duration`` seconds. Target >= 2,000 requests/s.

It starts its own broker and registry through :mod:`mesh.dev.stack`::

    python bench/registry_bench.py [--records 10000] [--connections 32] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.kafka.topics import TopicSpec, ensure_topics
from mesh.registry import records
from mesh.schema.compatibility import CompatibilityLevel

VERSIONS_PER_SUBJECT = 10


def fill(bootstrap: str, topic: str, count: int) -> int:
    """Produce *count* records; return how many schema ids they define."""
    ensure_topics(
        AdminClient({"bootstrap.servers": bootstrap}),
        [TopicSpec(topic, 1, config={"cleanup.policy": "compact"})],
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    schema_id = 0
    for n in range(count):
        subject, version = f"bench-{n // VERSIONS_PER_SUBJECT}-value", n % VERSIONS_PER_SUBJECT + 1
        if n % 20 == 19:  # a per-subject config every so often
            level = CompatibilityLevel.FULL
            key, value = records.config_change(subject=subject, level=level)
        else:
            schema_id += 1
            fields = [{"name": f"f{i}", "type": "long", "default": i} for i in range(version)]
            text = json.dumps({"type": "record", "name": f"R{n}", "fields": fields})
            put = records.SchemaPut(
                subject=subject,
                version=version,
                schema_id=schema_id,
                text=text,
                references=(),
                deleted=n % 50 == 7,  # a few soft-deleted versions
            )
            key, value = records.schema_put(put)
        producer.produce(topic, key=key, value=value)
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(30):
        raise SystemExit("the broker did not acknowledge the records")
    return schema_id


async def hammer(url: str, ids: int, *, connections: int, duration_s: float) -> tuple[int, float]:
    """Requests answered 200 and the seconds taken, from *connections* concurrent workers."""
    done = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            n = offset
            while time.monotonic() < deadline:
                n += connections
                async with session.get(f"{url}/schemas/ids/{n % ids + 1}") as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"GET /schemas/ids answered {response.status}")
                done += 1

        deadline = time.monotonic() + 0.5  # warm-up: connections, caches
        await asyncio.gather(*(worker(i) for i in range(connections)))
        done = 0
        started = time.monotonic()
        deadline = started + duration_s
        await asyncio.gather(*(worker(i) for i in range(connections)))
        return done, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    broker = start_broker(port=free_port(), log_dir=log_dir)
    registry = None
    try:
        topic = "_schemas_bench"
        ids = fill(broker.url, topic, args.records)
        launched = time.monotonic()
        registry = start_registry(
            bootstrap_servers=broker.url, port=free_port(), log_dir=log_dir, topic=topic
        )
        startup_s = time.monotonic() - launched
        read_line = next(
            line for line in registry.log_path.read_text().splitlines() if "records of" in line
        )
        print(f"start-up over {args.records:,} records: {startup_s:.2f} s (target <= 5 s)")
        print(f"  of which reading the topic: {read_line.split(': ', 1)[1]}")

        requests, elapsed_s = asyncio.run(
            hammer(registry.url, ids, connections=args.connections, duration_s=args.duration)
        )
        print(
            f"cached GET /schemas/ids/{{id}}: {requests / elapsed_s:,.0f} requests/s "
            f"({args.connections} connections, {elapsed_s:.1f} s; target >= 2,000)"
        )
    finally:
        if registry is not None:
            registry.stop()
        broker.stop()


if __name__ == "__main__":
    main()
