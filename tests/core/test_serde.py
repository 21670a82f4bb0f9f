"""Avro serde through a real schema registry: round trips, interop, evolution, failures."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from uuid import UUID, uuid4

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import BaseModel, Field, ValidationError, field_validator

from mesh.errors import DeserializationError, RegistryError, SerializationError
from mesh.event import Event
from mesh.serde import Serde, SubjectStrategy
from mesh.testing import unique_name


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    title: str
    due: datetime | None = None


class TaskCreated(Event, name="mesh.examples.TaskCreated", key="task_id"):
    task_id: str
    prompt: str
    created_at: datetime
    request_id: UUID
    budget: Decimal = Field(max_digits=10, decimal_places=2)


class Everything(Event, name="mesh.examples.Everything"):
    count: int
    ratio: float
    done: bool
    blob: bytes
    day: date
    at: datetime
    ref: UUID
    price: Decimal = Field(max_digits=20, decimal_places=6)
    priority: Priority
    kind: Literal["a", "b"]
    tags: list[str]
    scores: dict[str, float]
    stamps: list[datetime]
    note: str | None = None
    level: int | None = 7
    steps: list[Step] = []
    first: Step | None = None


class ThingV1(Event, name="mesh.examples.Thing"):
    thing_id: str
    size: int


class ThingV2(Event, name="mesh.examples.Thing"):
    thing_id: str
    size: int
    colour: str = "blue"
    born: date = date(2024, 2, 29)
    price: Decimal = Field(Decimal("-1.50"), max_digits=6, decimal_places=2)


class Shouted(Event, name="mesh.examples.Shouted"):
    text: str

    @field_validator("text")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class Positive(Event, name="mesh.examples.Positive"):
    n: int = Field(ge=0)


@pytest.fixture
def registry(mesh_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": mesh_registry_url})


@pytest.fixture
def serde(registry: SchemaRegistryClient) -> Serde:
    return Serde(registry)


@pytest.fixture
def topic() -> str:
    """Serde needs no topic on the broker: a unique name keeps the registry subjects apart."""
    return unique_name("serde")


def _task() -> TaskCreated:
    return TaskCreated(
        task_id="t-1",
        prompt="write a haiku about Kafka ☕",
        created_at=datetime(2026, 11, 26, 8, 30, 15, 123000, tzinfo=UTC),
        request_id=uuid4(),
        budget=Decimal("12.50"),
    )


def _everything() -> Everything:
    paris = timezone(timedelta(hours=1))
    return Everything(
        count=-(2**63),
        ratio=1e-300,
        done=True,
        blob=bytes(range(256)),
        day=date(1969, 12, 31),
        at=datetime(1960, 1, 1, 12, 0, 0, 1000, tzinfo=paris),
        ref=UUID(int=2**128 - 1),
        price=Decimal("-12345678901234.123456"),
        priority=Priority.HIGH,
        kind="b",
        tags=["x", "", "ünïcode"],
        scores={"a": 0.5, "": -1.0},
        stamps=[datetime(2000, 1, 1, tzinfo=UTC)],
        note=None,
        level=None,
        steps=[Step(title="one"), Step(title="two", due=datetime(2030, 1, 1, tzinfo=UTC))],
        first=Step(title="zero"),
    )


def test_the_value_is_in_the_confluent_wire_format(
    serde: Serde, registry: SchemaRegistryClient, topic: str
) -> None:
    data = serde.encode(_task(), topic)
    latest = registry.get_latest_version(f"{topic}-value")
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == latest.schema_id
    assert json.loads(latest.schema.schema_str) == TaskCreated.avro_schema()
    assert serde.register(TaskCreated, topic) == latest.schema_id


def test_a_flat_event_with_logical_types_round_trips_exactly(serde: Serde, topic: str) -> None:
    event = _task()
    decoded = serde.decode(serde.encode(event, topic), TaskCreated)
    assert decoded == event
    assert decoded.created_at.tzinfo == UTC
    assert type(decoded.request_id) is UUID
    assert str(decoded.budget) == "12.50"
    assert decoded.model_fields_set == set(TaskCreated.model_fields)


def test_every_supported_type_round_trips(serde: Serde, topic: str) -> None:
    event = _everything()
    decoded = serde.decode(serde.encode(event, topic), Everything)
    assert decoded == event
    assert decoded.at == datetime(1960, 1, 1, 11, 0, 0, 1000, tzinfo=UTC)
    assert decoded.at.tzinfo == UTC
    assert decoded.priority is Priority.HIGH
    assert isinstance(decoded.steps[1], Step)
    assert decoded.price == Decimal("-12345678901234.123456")


def test_sub_millisecond_digits_are_dropped(serde: Serde, topic: str) -> None:
    event = _task().model_copy(update={"created_at": datetime(2026, 1, 1, 0, 0, 0, 999, UTC)})
    decoded = serde.decode(serde.encode(event, topic), TaskCreated)
    assert decoded.created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_decoding_without_a_model_gives_the_writers_record(serde: Serde, topic: str) -> None:
    event = _task()
    assert serde.decode_record(serde.encode(event, topic)) == event.model_dump()


@pytest.mark.parametrize(
    ("strategy", "subject"),
    [
        (SubjectStrategy.TOPIC_NAME, "{topic}-value"),
        (SubjectStrategy.RECORD_NAME, "mesh.examples.TaskCreated"),
        (SubjectStrategy.TOPIC_RECORD_NAME, "{topic}-mesh.examples.TaskCreated"),
    ],
)
def test_subject_name_strategies(
    registry: SchemaRegistryClient, topic: str, strategy: SubjectStrategy, subject: str
) -> None:
    serde = Serde(registry, subject_strategy=strategy)
    data = serde.encode(_task(), topic)
    registered = registry.get_latest_version(subject.format(topic=topic))
    assert int.from_bytes(data[1:5], "big") == registered.schema_id


def test_mesh_records_are_readable_by_confluents_deserializer(
    serde: Serde, registry: SchemaRegistryClient, topic: str
) -> None:
    event = _everything()
    value = AvroDeserializer(registry)(
        serde.encode(event, topic), SerializationContext(topic, MessageField.VALUE)
    )
    assert value == {
        **event.model_dump(),
        "priority": "high",
        "at": datetime(1960, 1, 1, 11, 0, 0, 1000, tzinfo=UTC),
    }


def test_confluent_serializer_records_are_readable_by_mesh(
    serde: Serde, registry: SchemaRegistryClient, topic: str
) -> None:
    event = _everything()
    serializer = AvroSerializer(
        registry,
        json.dumps(Everything.avro_schema()),
        lambda e, _ctx: e.model_dump(),
    )
    data = serializer(event, SerializationContext(topic, MessageField.VALUE))
    assert serde.decode(data, Everything) == event


def test_user_validators_run_on_records_from_other_writers(
    serde: Serde, registry: SchemaRegistryClient, topic: str
) -> None:
    serializer = AvroSerializer(registry, json.dumps(Shouted.avro_schema()))
    data = serializer({"text": "quiet"}, SerializationContext(topic, MessageField.VALUE))
    assert serde.decode(data, Shouted).text == "QUIET"


def test_a_newer_reader_fills_added_fields_with_their_defaults(serde: Serde, topic: str) -> None:
    old = serde.encode(ThingV1(thing_id="a", size=3), topic)
    new = serde.encode(ThingV2(thing_id="b", size=4, colour="red"), topic)  # BACKWARD-compatible
    assert old[1:5] != new[1:5]
    assert serde.decode(old, ThingV2) == ThingV2(thing_id="a", size=3)
    assert serde.decode(old, ThingV2).price == Decimal("-1.50")
    assert serde.decode(new, ThingV2).colour == "red"
    assert serde.decode(new, ThingV1) == ThingV1(thing_id="b", size=4)  # an older reader


def test_an_incompatible_schema_is_refused_by_the_registry(serde: Serde, topic: str) -> None:
    class ThingV3(Event, name="mesh.examples.Thing"):
        thing_id: str
        weight: float  # a new field without a default: old records cannot be read

    serde.encode(ThingV1(thing_id="a", size=3), topic)
    with pytest.raises(SerializationError, match=f"subject {topic}-value") as info:
        serde.encode(ThingV3(thing_id="a", weight=1.0), topic)
    assert info.value.reason == "schema-rejected"


def test_without_auto_registration_an_unknown_schema_is_refused(
    registry: SchemaRegistryClient, topic: str
) -> None:
    serde = Serde(registry, auto_register=False)
    with pytest.raises(SerializationError, match="auto-registration is off") as info:
        serde.encode(_task(), topic)
    assert info.value.reason == "schema-rejected"
    Serde(registry).register(TaskCreated, topic)
    assert serde.decode(serde.encode(_task(), topic), TaskCreated).task_id == "t-1"


def test_naive_datetimes_are_refused_with_the_field_path(serde: Serde, topic: str) -> None:
    naive = _task().model_copy(update={"created_at": datetime(2026, 1, 1)})
    with pytest.raises(SerializationError, match=r"TaskCreated\.created_at is a naive datetime"):
        serde.encode(naive, topic)
    nested = _everything().model_copy(update={"steps": [Step(title="x", due=datetime(2026, 1, 1))]})
    with pytest.raises(SerializationError, match=r"Everything\.steps\[0\]\.due is a naive") as info:
        serde.encode(nested, f"{topic}-everything")
    assert info.value.reason == "invalid"


def test_data_that_does_not_fit_the_schema_is_a_serialization_error(
    serde: Serde, topic: str
) -> None:
    too_big = TaskCreated.model_construct(**{**_task().__dict__, "budget": Decimal("1.234")})
    with pytest.raises(SerializationError, match="does not fit its Avro schema") as info:
        serde.encode(too_big, topic)
    assert info.value.reason == "invalid"
    huge = ThingV1.model_construct(thing_id="a", size=2**64)
    with pytest.raises(SerializationError):
        serde.encode(huge, topic)


def test_an_unreachable_registry_is_a_registry_error_not_a_data_error() -> None:
    client = SchemaRegistryClient({"url": "http://127.0.0.1:9", "max.retries": 0})
    serde = Serde(client)
    with pytest.raises(RegistryError, match="unreachable"):
        serde.encode(_task(), "anywhere")
    with pytest.raises(RegistryError, match="unreachable"):
        serde.decode(b"\x00\x00\x00\x00\x01\x00", TaskCreated)


def _decode_error(serde: Serde, data: bytes | None, model: type[Event]) -> DeserializationError:
    with pytest.raises(DeserializationError) as info:
        serde.decode(data, model)
    return info.value


@pytest.mark.parametrize("data", [None, b""])
def test_no_value(serde: Serde, data: bytes | None) -> None:
    error = _decode_error(serde, data, TaskCreated)
    assert error.reason == "empty"


def test_bad_magic_byte(serde: Serde, topic: str) -> None:
    data = serde.encode(_task(), topic)
    error = _decode_error(serde, b"\x01" + data[1:], TaskCreated)
    assert error.reason == "bad-magic"
    assert "magic byte is 1" in str(error)
    assert _decode_error(serde, b'{"json": true}', TaskCreated).reason == "bad-magic"


@pytest.mark.parametrize("keep", [1, 4])
def test_truncated_header(serde: Serde, keep: int) -> None:
    error = _decode_error(serde, b"\x00\x00\x00\x00\x01"[:keep], TaskCreated)
    assert error.reason == "truncated"
    assert f"{keep} bytes, shorter than the 5-byte header" in str(error)


def test_truncated_payload(serde: Serde, topic: str) -> None:
    data = serde.encode(_task(), topic)
    for cut in (5, 8, len(data) - 1):
        assert _decode_error(serde, data[:cut], TaskCreated).reason == "truncated"


def test_unknown_schema_id(serde: Serde) -> None:
    error = _decode_error(serde, b"\x00\x7f\xff\xff\xf0\x02", TaskCreated)
    assert error.reason == "unknown-schema"
    assert "schema id 2147483632 is not in the registry" in str(error)


def test_a_writer_schema_that_does_not_resolve_to_the_model(serde: Serde, topic: str) -> None:
    data = serde.encode(ThingV1(thing_id="a", size=1), topic)
    error = _decode_error(serde, data, TaskCreated)
    assert error.reason == "schema-mismatch"
    assert "cannot be read as the event type's" in str(error)


def test_bytes_that_are_not_avro_for_the_schema(serde: Serde, topic: str) -> None:
    data = serde.encode(_task(), topic)
    not_utf8 = data[:5] + b"\x04\xff\xfe" + data[9:]  # task_id: 2 bytes that are not UTF-8
    error = _decode_error(serde, not_utf8, TaskCreated)
    assert error.reason == "malformed"
    assert "not valid Avro for its schema" in str(error)


def test_a_record_the_model_refuses(
    serde: Serde, registry: SchemaRegistryClient, topic: str
) -> None:
    serializer = AvroSerializer(registry, json.dumps(Positive.avro_schema()))
    data = serializer({"n": -5}, SerializationContext(topic, MessageField.VALUE))
    error = _decode_error(serde, data, Positive)
    assert error.reason == "invalid"
    assert "does not validate as mesh.examples.Positive: n: Input should be greater than" in str(
        error
    )


def test_a_trusted_fast_path_decodes_like_validation(serde: Serde, topic: str) -> None:
    """A plain model read with its own schema skips validation, with the same result."""
    data = serde.encode(_task(), topic)
    fast = serde.decode(data, TaskCreated)
    validated = TaskCreated.model_validate(serde.decode_record(data))
    assert fast == validated
    assert fast.model_dump() == validated.model_dump()
    assert fast.model_fields_set == validated.model_fields_set
    with pytest.raises(ValidationError, match="frozen"):
        fast.task_id = "changed"  # type: ignore[misc]
    schema_id = int.from_bytes(data[1:5], "big")
    assert serde._readers[(schema_id, TaskCreated)].build is not TaskCreated.model_validate


def test_models_that_need_validation_get_it(serde: Serde, topic: str) -> None:
    """Not plain (enum, nested), own validators, or another writer's schema: model_validate."""
    cases = [
        (_everything(), Everything),
        (Shouted(text="x"), Shouted),
        (ThingV1(thing_id="a", size=1), ThingV2),
    ]
    for index, (event, model) in enumerate(cases):
        data = serde.encode(event, f"{topic}-{index}")
        serde.decode(data, model)
        schema_id = int.from_bytes(data[1:5], "big")
        assert serde._readers[(schema_id, model)].build == model.model_validate
