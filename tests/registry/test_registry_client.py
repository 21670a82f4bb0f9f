"""The registry through the real confluent-kafka client, serializer and deserializer."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from mesh.testing import unique_name


def avro_record(*fields: dict[str, object], name: str = "Event") -> Schema:
    """A record schema in compact JSON, the form the registry stores and returns."""
    text = json.dumps(
        {"type": "record", "name": name, "fields": list(fields)}, separators=(",", ":")
    )
    return Schema(text, "AVRO")


A = {"name": "a", "type": "int"}
# Each step FULL-compatible with the previous one; V3 is compatible with neither side of V1.
V1 = avro_record(A, {"name": "b", "type": "int", "default": 0})
V2 = avro_record(A)
V3 = avro_record(A, {"name": "b", "type": "string", "default": "x"})
ADD_REQUIRED = avro_record(A, {"name": "c", "type": "string"})  # breaks BACKWARD only
TYPE_CHANGE = avro_record({"name": "a", "type": "string"})  # breaks both directions

LEVELS = [
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
]


def test_register_look_up_fetch_and_list(client: SchemaRegistryClient, subject: str) -> None:
    schema_id = client.register_schema(subject, V1)
    assert client.get_schema(schema_id).schema_str == V1.schema_str
    found = client.lookup_schema(subject, V1)
    assert (found.subject, found.version, found.schema_id) == (subject, 1, schema_id)
    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1]
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id, latest.schema.schema_str) == (
        1,
        schema_id,
        V1.schema_str,
    )
    assert client.get_subjects_by_schema_id(schema_id) == [subject]
    [version] = client.get_schema_versions(schema_id)
    assert (version.subject, version.version) == (subject, 1)


def test_one_id_per_schema_and_no_new_version_on_re_registering(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    first = client.register_schema(subject, V2)
    spaced = Schema(json.dumps(json.loads(V2.schema_str), indent=3), "AVRO")
    fresh = new_client()  # no client-side cache
    assert fresh.register_schema(subject, spaced) == first
    assert fresh.register_schema(subject, V2) == first
    assert fresh.get_versions(subject) == [1]
    other = unique_name("other")
    assert fresh.register_schema(other, spaced) == first  # same schema, same id, any subject
    assert fresh.get_version(other, 1).schema_id == first
    assert fresh.register_schema(subject, V3) > first  # ids grow


def test_normalize_matches_equivalent_spellings(
    new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    long_form = avro_record({"name": "a", "type": {"type": "int"}}, name="Spelled")
    short_form = avro_record({"name": "a", "type": "int"}, name="Spelled")
    schema_id = new_client().register_schema(subject, long_form)
    assert new_client().lookup_schema(subject, short_form, normalize_schemas=True).version == 1
    with pytest.raises(SchemaRegistryError) as not_found:
        new_client().lookup_schema(subject, short_form)  # without normalizing: another text
    assert not_found.value.error_code == 40403
    assert new_client().register_schema(subject, short_form, normalize_schemas=True) == schema_id
    assert new_client().get_versions(subject) == [1]


@pytest.mark.parametrize("level", LEVELS)
def test_evolution_at_each_level(client: SchemaRegistryClient, subject: str, level: str) -> None:
    client.set_compatibility(subject_name=subject, level=level)
    assert client.get_compatibility(subject) == level
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    transitive = level.endswith("_TRANSITIVE")
    expected = {
        V3: level == "NONE" or not transitive,
        ADD_REQUIRED: level == "NONE" or level.startswith("FORWARD"),
        TYPE_CHANGE: level == "NONE",
    }
    for candidate, compatible in expected.items():
        assert client.test_compatibility_all_versions(subject, candidate) is compatible
        assert client.test_compatibility(subject, candidate) is (
            compatible or (transitive and candidate is V3)  # latest alone accepts V3
        )
    for candidate, compatible in expected.items():
        if compatible:
            continue
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema(subject, candidate)
        assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    if expected[V3]:
        client.register_schema(subject, V3)
    assert client.get_versions(subject) == ([1, 2, 3] if expected[V3] else [1, 2])


def test_soft_then_permanent_delete(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    only_here = avro_record(A, {"name": "u", "type": "string", "default": subject})  # own id
    first = client.register_schema(subject, only_here)
    client.register_schema(subject, V2)
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.get_schema_versions(first)  # still there
    new_client().register_schema(subject, V2)  # re-registering a soft-deleted one: new version
    assert client.get_versions(subject) == [1, 3]
    with pytest.raises(SchemaRegistryError) as refused:
        client.delete_subject(subject, permanent=True)
    assert refused.value.error_code == 40405
    assert client.delete_subject(subject) == [1, 3]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    assert client.get_schema(first).schema_str == only_here.schema_str  # ids survive soft deletes
    assert client.delete_subject(subject, permanent=True) == [1, 2, 3]
    assert subject not in client.get_subjects(deleted=True)
    with pytest.raises(SchemaRegistryError) as gone:
        new_client().get_schema(first)
    assert gone.value.error_code == 40403


def test_references_to_named_types(
    client: SchemaRegistryClient, new_client: Callable[[], SchemaRegistryClient], subject: str
) -> None:
    address = Schema(
        json.dumps(
            {
                "type": "record",
                "name": "Address",
                "namespace": "mesh.test",
                "fields": [{"name": "street", "type": "string"}],
            }
        ),
        "AVRO",
    )
    address_subject = unique_name("address")
    client.register_schema(address_subject, address)
    user = Schema(
        json.dumps(
            {
                "type": "record",
                "name": "User",
                "namespace": "mesh.test",
                "fields": [{"name": "home", "type": "Address"}],
            }
        ),
        "AVRO",
        [SchemaReference("mesh.test.Address", address_subject, 1)],
    )
    user_id = client.register_schema(subject, user)
    assert client.get_referenced_by(address_subject, 1) == [user_id]
    fetched = new_client().get_schema(user_id)
    assert [ref.subject for ref in fetched.references] == [address_subject]
    with pytest.raises(SchemaRegistryError) as referenced:
        client.delete_version(address_subject, 1)
    assert referenced.value.error_code == 42206


def test_serializer_to_deserializer_through_a_topic(
    client: SchemaRegistryClient,
    new_client: Callable[[], SchemaRegistryClient],
    mesh_topic: Callable[..., str],
    mesh_bootstrap_servers: str,
) -> None:
    topic = mesh_topic()
    serializer = AvroSerializer(client, V3.schema_str)
    values = [{"a": n, "b": f"v{n}"} for n in range(5)]
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers})
    for value in values:
        data = serializer(value, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, value=data)
    assert producer.flush(10) == 0

    deserializer = AvroDeserializer(new_client())  # fetches by id
    consumer = Consumer({"bootstrap.servers": mesh_bootstrap_servers, "group.id": unique_name("g")})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    received = []
    try:
        while len(received) < len(values):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                context = SerializationContext(topic, MessageField.VALUE)
                received.append(deserializer(message.value(), context))
    finally:
        consumer.close()
    assert received == values
    assert client.get_latest_version(f"{topic}-value").schema.schema_str == V3.schema_str
