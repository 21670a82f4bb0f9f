"""Event declarations: naming, topics, keys, and the Avro schema derived from the model."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, Literal
from uuid import UUID

import avro.schema
import fastavro
import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from mesh.avro import with_python_defaults
from mesh.errors import SchemaError
from mesh.event import Event, topic_name


class Priority(StrEnum):
    """How urgent a task is."""

    LOW = "low"
    HIGH = "high"


class Step(BaseModel):
    """One step of a plan."""

    title: str
    due: datetime | None = None


class Owner(Event, name="mesh.people.Owner"):
    name: str


class TaskCreated(Event, name="mesh.examples.TaskCreated", topic="tasks.created", key="task_id"):
    """A user asked for a task."""

    task_id: str
    prompt: str
    """What to do, in the user's words."""
    created_at: datetime
    request_id: UUID
    budget: Decimal = Field(max_digits=10, decimal_places=2, description="In euros.")


class Everything(Event, name="mesh.examples.Everything"):
    count: int = 3
    ratio: float = 0.5
    done: bool = False
    blob: bytes = b"\x00\xff"
    day: date = date(2024, 2, 29)
    at: datetime = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    ref: UUID = UUID("12345678-1234-5678-1234-567812345678")
    price: Decimal = Field(Decimal("-1.50"), max_digits=6, decimal_places=2)
    priority: Priority = Priority.HIGH
    kind: Literal["a", "b"] = "a"
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    note: str | None = None
    level: int | None = 7
    first: Step = Step(title="start")
    steps: list[Step] = []
    owner: Owner | None = None
    backup: Priority | None = None


def test_defaults_name_the_event_after_its_class() -> None:
    class HTTPRequestSent(Event):
        url: str

    assert HTTPRequestSent.event_type() == "HTTPRequestSent"
    assert HTTPRequestSent.topic() == "http-request-sent"
    assert HTTPRequestSent.avro_schema()["name"] == "HTTPRequestSent"
    assert "namespace" not in HTTPRequestSent.avro_schema()
    assert HTTPRequestSent.key_of(HTTPRequestSent(url="x")) is None


@pytest.mark.parametrize(
    ("name", "topic"),
    [
        ("TaskCreated", "task-created"),
        ("HTTPRequestSent", "http-request-sent"),
        ("Task2Done", "task2-done"),
        ("plan_ready", "plan-ready"),
        ("A", "a"),
    ],
)
def test_topic_naming_convention_is_kebab_case(name: str, topic: str) -> None:
    assert topic_name(name) == topic


def test_declared_name_namespace_topic_and_key() -> None:
    assert TaskCreated.event_type() == "mesh.examples.TaskCreated"
    assert TaskCreated.topic() == "tasks.created"
    event = TaskCreated(
        task_id="t-1",
        prompt="p",
        created_at=datetime.now(UTC),
        request_id=UUID(int=1),
        budget=Decimal("1.50"),
    )
    assert TaskCreated.key_of(event) == b"t-1"
    assert event.event_type() == "mesh.examples.TaskCreated"


def test_int_and_uuid_keys_are_their_text() -> None:
    class ByNumber(Event, key="n"):
        n: int

    class ById(Event, key="ref"):
        ref: UUID

    assert ByNumber.key_of(ByNumber(n=42)) == b"42"
    ref = UUID("12345678-1234-5678-1234-567812345678")
    assert ById.key_of(ById(ref=ref)) == b"12345678-1234-5678-1234-567812345678"


def test_schema_of_the_issue_example_is_exact() -> None:
    assert TaskCreated.avro_schema() == {
        "type": "record",
        "name": "TaskCreated",
        "namespace": "mesh.examples",
        "doc": "A user asked for a task.",
        "fields": [
            {"name": "task_id", "type": "string"},
            {"name": "prompt", "type": "string", "doc": "What to do, in the user's words."},
            {
                "name": "created_at",
                "type": {"type": "long", "logicalType": "timestamp-millis"},
            },
            {"name": "request_id", "type": {"type": "string", "logicalType": "uuid"}},
            {
                "name": "budget",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
                "doc": "In euros.",
            },
        ],
    }


def test_every_supported_type_maps_to_avro_with_its_default() -> None:
    fields = {f["name"]: f for f in Everything.avro_schema()["fields"]}
    step = {
        "type": "record",
        "name": "Step",
        "doc": "One step of a plan.",
        "fields": [
            {"name": "title", "type": "string"},
            {
                "name": "due",
                "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
                "default": None,
            },
        ],
    }
    assert fields == {
        "count": {"name": "count", "type": "long", "default": 3},
        "ratio": {"name": "ratio", "type": "double", "default": 0.5},
        "done": {"name": "done", "type": "boolean", "default": False},
        "blob": {"name": "blob", "type": "bytes", "default": "\u0000\u00ff"},
        "day": {"name": "day", "type": {"type": "int", "logicalType": "date"}, "default": 19782},
        "at": {
            "name": "at",
            "type": {"type": "long", "logicalType": "timestamp-millis"},
            "default": 1704067201000,
        },
        "ref": {
            "name": "ref",
            "type": {"type": "string", "logicalType": "uuid"},
            "default": "12345678-1234-5678-1234-567812345678",
        },
        "price": {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
            "default": "\u00ffj",  # -150: two's complement, big-endian, as latin-1
        },
        "priority": {
            "name": "priority",
            "type": {
                "type": "enum",
                "name": "Priority",
                "symbols": ["low", "high"],
                "doc": "How urgent a task is.",
            },
            "default": "high",
        },
        "kind": {"name": "kind", "type": "string", "default": "a"},
        "tags": {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        "scores": {"name": "scores", "type": {"type": "map", "values": "double"}, "default": {}},
        "note": {"name": "note", "type": ["null", "string"], "default": None},
        "level": {"name": "level", "type": ["long", "null"], "default": 7},
        "first": {"name": "first", "type": step, "default": {"title": "start", "due": None}},
        "steps": {
            "name": "steps",
            "type": {"type": "array", "items": "mesh.examples.Step"},
            "default": [],
        },
        "owner": {
            "name": "owner",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Owner",
                    "namespace": "mesh.people",
                    "fields": [{"name": "name", "type": "string"}],
                },
            ],
            "default": None,
        },
        "backup": {"name": "backup", "type": ["null", "mesh.examples.Priority"], "default": None},
    }


@pytest.mark.parametrize("event_type", [TaskCreated, Everything])
def test_generated_schemas_parse_in_fastavro_and_the_avro_library(
    event_type: type[Event],
) -> None:
    schema = event_type.avro_schema()
    fastavro.parse_schema(schema)  # also checks every default against its type
    parsed = avro.schema.parse(json.dumps(schema))
    assert parsed.fullname == event_type.event_type()


def test_python_defaults_invert_the_schema_defaults() -> None:
    """A writer that had none of the fields: schema resolution yields the model's defaults."""
    writer = {"type": "record", "name": "Everything", "namespace": "mesh.examples", "fields": []}
    reader = fastavro.parse_schema(
        with_python_defaults(Everything.avro_schema()), _ignore_default_error=True
    )
    record = fastavro.schemaless_reader(io.BytesIO(b""), fastavro.parse_schema(writer), reader)
    assert Everything.model_validate(record) == Everything()
    assert record["price"] == Decimal("-1.50")
    assert record["blob"] == b"\x00\xff"
    assert record["day"] == date(2024, 2, 29)
    assert record["first"] == {"title": "start", "due": None}


def test_raw_json_defaults_would_decode_wrongly() -> None:
    """Why with_python_defaults exists: fastavro fills defaults without logical types."""
    writer = {"type": "record", "name": "Everything", "namespace": "mesh.examples", "fields": []}
    reader = fastavro.parse_schema(Everything.avro_schema())
    record = fastavro.schemaless_reader(io.BytesIO(b""), fastavro.parse_schema(writer), reader)
    assert record["day"] == 19782
    assert record["blob"] == "\u0000\u00ff"


def test_field_factories_other_than_empty_containers_give_no_default() -> None:
    class Stamped(Event):
        at: datetime = Field(default_factory=lambda: datetime.now(UTC))
        tags: list[str] = Field(default_factory=list)

    fields = {f["name"]: f for f in Stamped.avro_schema()["fields"]}
    assert "default" not in fields["at"]
    assert fields["tags"]["default"] == []


def test_traits_tell_the_serde_what_it_may_skip() -> None:
    class Flat(Event):
        a: str
        b: list[int]
        c: datetime | None = None
        d: Decimal = Field(max_digits=4, decimal_places=1)

    class Constrained(Event):
        a: int = Field(ge=0)

    class WithEnum(Event):
        p: Priority

    flat = Flat.avro_model()
    assert (flat.flat, flat.plain, flat.datetime_fields) == (True, True, ("c",))
    assert (Constrained.avro_model().flat, Constrained.avro_model().plain) == (True, False)
    assert (WithEnum.avro_model().flat, WithEnum.avro_model().plain) == (True, False)
    nested = Everything.avro_model()
    assert (nested.flat, nested.plain) == (False, False)
    assert nested.datetime_fields == ("at", "first", "steps")


def test_a_named_type_used_twice_is_defined_once_then_referenced() -> None:
    class Plan(Event, name="acme.Plan"):
        main: Step
        fallback: Step | None = None

    main, fallback = Plan.avro_schema()["fields"]
    assert main["type"]["name"] == "Step"
    assert fallback["type"] == ["null", "acme.Step"]


def test_recursive_models_reference_themselves_by_name() -> None:
    class Node(BaseModel):
        label: str
        children: list[Node] = []

    class Tree(Event, name="acme.Tree"):
        root: Node

    node = Tree.avro_schema()["fields"][0]["type"]
    assert node["fields"][1]["type"] == {"type": "array", "items": "acme.Node"}
    fastavro.parse_schema(Tree.avro_schema())


def test_forward_references_are_resolved_on_first_use() -> None:
    class Later(Event):
        detail: Detail

    class Detail(BaseModel):
        size: int

    globals()["Detail"] = Detail  # where pydantic resolves module-level names
    try:
        assert Later.avro_schema()["fields"][0]["type"]["name"] == "Detail"
    finally:
        del globals()["Detail"]


def test_events_are_immutable_and_refuse_unknown_fields() -> None:
    class Ping(Event):
        n: int

    ping = Ping(n=1)
    with pytest.raises(ValidationError, match="frozen"):
        ping.n = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Ping(n=1, m=2)  # type: ignore[call-arg]


def test_the_base_class_is_not_an_event_type() -> None:
    with pytest.raises(TypeError, match="base class"):
        Event.event_type()


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (set[int], r"Bad\.field: type set\[int\] has no Avro mapping"),
        (int | str, r"Bad\.field: only `T \| None` unions are supported"),
        (dict[int, str], r"Bad\.field: map keys must be str"),
        (Decimal, r"Bad\.field: a Decimal needs max_digits and decimal_places"),
        (Literal[1, 2], r"Bad\.field: only Literal of strings"),
        (Any, r"Bad\.field: type typing\.Any has no Avro mapping"),
        (tuple[int, int], r"Bad\.field: type tuple\[int, int\] has no Avro mapping"),
        (list, r"Bad\.field: type <class 'list'> has no Avro mapping"),
    ],
)
def test_unsupported_types_fail_at_class_definition(annotation: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        type("Bad", (Event,), {"__annotations__": {"field": annotation}})


def test_an_int_enum_is_refused() -> None:
    class Size(Enum):
        S = 1

    with pytest.raises(SchemaError, match="enum Size must be a StrEnum"):

        class Shirt(Event):
            size: Size


def test_an_unsupported_type_in_a_nested_model_names_both_classes() -> None:
    class Inner(BaseModel):
        values: set[str]

    with pytest.raises(SchemaError, match=r"<locals>\.Outer: .*<locals>\.Inner\.values: type set"):

        class Outer(Event):
            inner: Inner


def test_two_types_with_one_avro_name_are_refused() -> None:
    def make() -> type[BaseModel]:
        class Part(BaseModel):
            n: int

        return Part

    first, second = make(), make()
    with pytest.raises(SchemaError, match=r"two different types are both named 'acme\.Part'"):
        type(
            "Machine",
            (Event,),
            {"__annotations__": {"a": first, "b": second}},
            name="acme.Machine",
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "missing"}, r"key='missing' must name a field of type str, int or UUID"),
        ({"key": "size"}, r"key='size' must name a field of type str, int or UUID"),
        ({"topic": "no spaces"}, r"'no spaces' is not a valid Kafka topic name"),
        ({"topic": ".."}, r"'\.\.' is not a valid Kafka topic name"),
        ({"name": "acme.9lives"}, r"name: '9lives' is not a valid Avro name"),
        ({"name": "acme..Odd"}, r"name: '' is not a valid Avro name"),
    ],
)
def test_invalid_declarations_fail_at_class_definition(
    kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        type("Declared", (Event,), {"__annotations__": {"size": float | None}}, **kwargs)


def test_a_default_that_does_not_fit_its_type_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"Odd: not a valid Avro schema: Default value <x>"):

        class Odd(Event):
            n: int = "x"  # type: ignore[assignment]


def test_field_aliases_are_refused() -> None:
    with pytest.raises(SchemaError, match=r"Aliased\.user_name: aliases are not supported"):

        class Aliased(Event):
            user_name: str = Field(alias="userName")


def test_user_validators_still_run_on_construction() -> None:
    class Shout(Event):
        text: str

        @field_validator("text")
        @classmethod
        def upper(cls, value: str) -> str:
            return value.upper()

    assert Shout(text="hi").text == "HI"
