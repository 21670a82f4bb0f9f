"""State lives in the topic: a restarted registry serves the same, and two registries agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mesh.dev.stack import ManagedProcess
from mesh.registry import records
from mesh.testing import unique_name

StartRegistry = Callable[[str], ManagedProcess]
Snapshot = Callable[[str], dict[str, Any]]
Eventually = Callable[[Callable[[], bool]], None]


def distinct_schema(n: int) -> Schema:
    fields = [{"name": f"f{n}", "type": "long", "default": n}]
    return Schema(json.dumps({"type": "record", "name": f"R{n}", "fields": fields}), "AVRO")


def is_primary(registry: ManagedProcess) -> bool:
    return "this registry is the primary" in registry.log_path.read_text()


def test_a_restarted_registry_reads_everything_back(
    start_registry_on: StartRegistry, snapshot: Snapshot
) -> None:
    topic = unique_name("_schemas")
    first = start_registry_on(topic)
    client = SchemaRegistryClient({"url": first.url})
    client.set_compatibility(level="FORWARD")
    client.set_compatibility(subject_name="kept", level="NONE")
    ids = [client.register_schema("kept", distinct_schema(n)) for n in range(3)]
    ids.append(client.register_schema("other", distinct_schema(0)))
    client.delete_version("kept", 2)
    ids.append(client.register_schema("dropped", distinct_schema(9)))  # the highest id
    client.delete_subject("dropped")
    client.delete_subject("dropped", permanent=True)
    before = snapshot(first.url)
    assert before["kept"]["config"] == {"compatibilityLevel": "NONE"}
    first.stop()

    second = start_registry_on(topic)
    assert snapshot(second.url) == before
    new_id = SchemaRegistryClient({"url": second.url}).register_schema("new", distinct_schema(5))
    assert new_id > max(ids)  # a permanently deleted id is never handed out again


def test_two_registries_agree_and_ids_never_collide(
    start_registry_on: StartRegistry, snapshot: Snapshot, eventually: Eventually
) -> None:
    topic = unique_name("_schemas")
    registries = [start_registry_on(topic), start_registry_on(topic)]
    clients = [SchemaRegistryClient({"url": registry.url}) for registry in registries]
    clients[1].set_compatibility(level="NONE")

    def register(job: tuple[int, int, str]) -> tuple[int, int]:
        via, n, subject = job
        schema_id = clients[via].register_schema(subject, distinct_schema(n))
        # read-your-writes on the registry that answered, even when it forwarded the write
        response = httpx.get(f"{registries[via].url}/schemas/ids/{schema_id}", timeout=10)
        assert response.status_code == 200
        return n, schema_id

    jobs = [(n % 2, n, f"subject-{n % 4}") for n in range(24)]
    jobs += [((n + 1) % 2, n, f"copy-{n % 2}") for n in range(8)]  # same schemas, other side
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(register, jobs))

    ids_by_schema: dict[int, set[int]] = {}
    for n, schema_id in results:
        ids_by_schema.setdefault(n, set()).add(schema_id)
    assert all(len(ids) == 1 for ids in ids_by_schema.values())  # one id per schema
    assert len({min(ids) for ids in ids_by_schema.values()}) == 24  # no two schemas share one
    versions = clients[0].get_versions("subject-0")
    assert versions == list(range(1, len(versions) + 1))
    eventually(lambda: snapshot(registries[0].url) == snapshot(registries[1].url))

    clients[0].delete_subject("subject-1")
    eventually(lambda: "subject-1" not in httpx.get(f"{registries[1].url}/subjects").json())

    # the primary goes away: the other one takes over and keeps allocating fresh ids
    primary = next(registry for registry in registries if is_primary(registry))
    survivor = registries[1 - registries.index(primary)]
    primary.stop()
    client = SchemaRegistryClient({"url": survivor.url})
    new_id = client.register_schema("after-failover", distinct_schema(100))
    assert new_id > max(max(ids) for ids in ids_by_schema.values())
    assert is_primary(survivor)


def test_a_former_primarys_late_record_is_ignored_and_its_key_repaired(
    start_registry_on: StartRegistry,
    snapshot: Snapshot,
    eventually: Eventually,
    mesh_bootstrap_servers: str,
) -> None:
    topic = unique_name("_schemas")
    registry = start_registry_on(topic)
    client = SchemaRegistryClient({"url": registry.url})
    schema_id = client.register_schema("s", distinct_schema(1))
    before = snapshot(registry.url)

    # what a primary that lost its role without noticing would write: a stale epoch
    stale = records.SchemaPut(
        subject="s", version=1, schema_id=schema_id, text='"int"', references=(), deleted=False
    )
    key, value = records.schema_put(stale)
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers})
    producer.produce(topic, key=key, value=value, headers=[(records.EPOCH_HEADER, b"999999")])
    assert producer.flush(10) == 0

    def last_value_for_key() -> bytes | None:
        consumer = Consumer({"bootstrap.servers": mesh_bootstrap_servers, "group.id": "peek"})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        found, misses = None, 0
        while misses < 3:
            message = consumer.poll(0.3)
            if message is None:
                misses += 1
            elif message.error() is None and message.key() == key:
                found = message.value()
        consumer.close()
        return found

    # compaction would keep the last value of the key: the primary re-writes the valid one
    eventually(lambda: last_value_for_key() not in (None, value))
    assert snapshot(registry.url) == before
    registry.stop()
    assert snapshot(start_registry_on(topic).url) == before  # a replay ignores it as well
