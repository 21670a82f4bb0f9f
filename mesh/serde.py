"""Event values as Avro in the Confluent wire format, schema ids from a schema registry.

A value is the magic byte 0, the writer schema's registry id (4 bytes, big-endian) and the
Avro binary encoding, so confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` and
mesh read each other's records. Writer schemas are registered (or looked up) once per
(event type, topic) and fetched once per id; decoding resolves the writer schema against
the event type's own (schema evolution).

Hot path: a flat event's ``__dict__`` is handed to fastavro as it is; a decoded record
written with the event type's own schema skips pydantic validation when the type is
plain (Avro already checked every value; see :class:`mesh.avro.AvroModel`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from io import BytesIO
from typing import Any, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from pydantic import BaseModel, ValidationError

from mesh.avro import with_python_defaults
from mesh.config import Settings
from mesh.errors import DeserializationError, RegistryError, SerializationError
from mesh.event import Event

__all__ = ["Serde", "SubjectStrategy"]

E = TypeVar("E", bound=Event)

_MAGIC = 0
_HEADER_BYTES = 5
_WRITE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, OverflowError)
_new_object = object.__new__
_set = object.__setattr__


class SubjectStrategy(StrEnum):
    """How a registry subject is named, as in Confluent's serializers."""

    TOPIC_NAME = "topic_name"  # {topic}-value: one event type per topic (the default)
    RECORD_NAME = "record_name"  # {record}: one schema history per type, across topics
    TOPIC_RECORD_NAME = "topic_record_name"  # {topic}-{record}: several types per topic

    def subject(self, topic: str, record_name: str) -> str:
        if self is SubjectStrategy.TOPIC_NAME:
            return f"{topic}-value"
        if self is SubjectStrategy.RECORD_NAME:
            return record_name
        return f"{topic}-{record_name}"


@dataclass(frozen=True, slots=True)
class _Writer:
    schema_id: int
    header: bytes
    parsed: Any
    datum: Callable[[Event], Any]
    datetime_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _WriterSchema:
    schema: dict[str, Any]
    parsed: Any


@dataclass(frozen=True, slots=True)
class _Reader:
    writer: Any
    reader: Any | None  # None: the writer schema is the model's own
    build: Callable[[dict[str, Any]], Any]


class Serde:
    """Encodes events for a topic and decodes record values into event types.

    Thread-safe; one per process is enough (the caches are its point). Nothing is
    fetched until the first use of an event type; call :meth:`register` at start-up to
    surface registry problems before the first event.
    """

    def __init__(
        self,
        registry: SchemaRegistryClient,
        *,
        subject_strategy: SubjectStrategy | str = SubjectStrategy.TOPIC_NAME,
        auto_register: bool = True,
    ) -> None:
        self._registry = registry
        self._strategy = SubjectStrategy(subject_strategy)
        self._auto_register = auto_register
        self._writers: dict[tuple[type[Event], str], _Writer] = {}
        self._writer_schemas: dict[int, _WriterSchema] = {}
        self._readers: dict[tuple[int, type[Event]], _Reader] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Serde:
        """The serde of *settings*: its registry (with auth) and subject strategy."""
        return cls(
            SchemaRegistryClient(settings.registry_config()),
            subject_strategy=settings.subject_strategy,
        )

    def register(self, model: type[Event], topic: str) -> int:
        """The schema id *model* is written with on *topic*, registering it if need be."""
        return self._writer(model, topic).schema_id

    def encode(self, event: Event, topic: str) -> bytes:
        """The record value of *event* on *topic*."""
        writer = self._writers.get((event.__class__, topic)) or self._writer(event.__class__, topic)
        for name in writer.datetime_fields:
            _refuse_naive(getattr(event, name), f"{event.__class__.__qualname__}.{name}")
        out = BytesIO()
        out.write(writer.header)
        try:
            schemaless_writer(out, writer.parsed, writer.datum(event))
        except _WRITE_ERRORS as exc:
            raise SerializationError(
                f"{event.event_type()} does not fit its Avro schema: {exc}", reason="invalid"
            ) from exc
        return out.getvalue()

    def decode(self, data: bytes | None, model: type[E]) -> E:
        """The event of type *model* in the record value *data*.

        Raises :class:`DeserializationError` for anything wrong with the bytes (its
        ``reason`` says what), :class:`RegistryError` when the registry cannot be asked.
        """
        value, schema_id = _split(data)
        reader = self._readers.get((schema_id, model)) or self._reader(schema_id, model)
        record = _read(value, schema_id, reader.writer, reader.reader)
        try:
            event: E = reader.build(record)
        except ValidationError as exc:
            raise DeserializationError(
                f"schema id {schema_id}: the record does not validate as {model.event_type()}: "
                f"{_one_line(exc)}",
                reason="invalid",
            ) from None
        return event

    def decode_record(self, data: bytes | None) -> dict[str, Any]:
        """The record in *data* as its writer wrote it (for tools that have no model)."""
        value, schema_id = _split(data)
        return _read(value, schema_id, self._writer_schema(schema_id).parsed, None)

    def _writer(self, model: type[Event], topic: str) -> _Writer:
        avro = model.avro_model()
        subject = self._strategy.subject(topic, model.event_type())
        schema = Schema(json.dumps(avro.schema), "AVRO")
        try:
            if self._auto_register:
                schema_id = self._registry.register_schema(subject, schema)
            else:
                schema_id = self._registry.lookup_schema(subject, schema).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code >= 500:
                raise RegistryError(
                    f"schema registry failed for subject {subject}: {exc}"
                ) from None
            hint = "" if self._auto_register else " (auto-registration is off: register it first)"
            raise SerializationError(
                f"the registry refused {model.event_type()} under subject {subject}: "
                f"{exc.error_message}{hint}",
                reason="schema-rejected",
            ) from None
        except Exception as exc:  # transport errors: the client's HTTP library's own types
            raise RegistryError(f"schema registry unreachable: {exc!r}") from exc
        writer = _Writer(
            schema_id=schema_id,
            header=bytes([_MAGIC]) + schema_id.to_bytes(4, "big"),
            parsed=parse_schema(avro.schema),
            datum=_dict_of if avro.flat else _datum,
            datetime_fields=avro.datetime_fields,
        )
        self._writers[(model, topic)] = writer
        return writer

    def _writer_schema(self, schema_id: int) -> _WriterSchema:
        cached = self._writer_schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DeserializationError(
                    f"schema id {schema_id} is not in the registry", reason="unknown-schema"
                ) from None
            raise RegistryError(f"schema registry failed for id {schema_id}: {exc}") from None
        except Exception as exc:  # transport errors: the client's HTTP library's own types
            raise RegistryError(f"schema registry unreachable: {exc!r}") from exc
        if (registered.schema_type or "AVRO") != "AVRO":
            raise DeserializationError(
                f"schema id {schema_id} is a {registered.schema_type} schema, not Avro",
                reason="schema-mismatch",
            )
        try:
            schema = json.loads(registered.schema_str or "")
            cached = _WriterSchema(schema=schema, parsed=parse_schema(schema))
        except Exception as exc:  # fastavro raises several types for a schema it cannot parse
            raise DeserializationError(
                f"schema id {schema_id} cannot be used: {exc}", reason="schema-mismatch"
            ) from None
        self._writer_schemas[schema_id] = cached
        return cached

    def _reader(self, schema_id: int, model: type[E]) -> _Reader:
        writer = self._writer_schema(schema_id)
        avro = model.avro_model()
        own = writer.schema == avro.schema
        trusted = own and _trusts_avro(model, avro.plain)
        reader = _Reader(
            writer=writer.parsed,
            reader=None if own else _reader_schema(avro.schema),
            build=_builder(model) if trusted else model.model_validate,
        )
        self._readers[(schema_id, model)] = reader
        return reader


def _reader_schema(schema: dict[str, Any]) -> Any:
    """The model's schema for resolving another writer's records (see with_python_defaults)."""
    return parse_schema(with_python_defaults(schema), _ignore_default_error=True)


def _split(data: bytes | None) -> tuple[bytes, int]:
    """The value and its writer schema id, after checking the wire-format header."""
    if not data:
        raise DeserializationError("the record has no value", reason="empty")
    if data[0] != _MAGIC:
        raise DeserializationError(
            f"magic byte is {data[0]}, not 0: not the Confluent wire format", reason="bad-magic"
        )
    if len(data) < _HEADER_BYTES:
        raise DeserializationError(
            f"{len(data)} bytes, shorter than the 5-byte header", reason="truncated"
        )
    return data, int.from_bytes(data[1:_HEADER_BYTES], "big")


def _read(data: bytes, schema_id: int, writer: Any, reader: Any | None) -> dict[str, Any]:
    buffer = BytesIO(data)
    buffer.seek(_HEADER_BYTES)
    try:
        record: dict[str, Any] = schemaless_reader(buffer, writer, reader)  # type: ignore[assignment]
        return record
    except EOFError:
        raise DeserializationError(
            f"schema id {schema_id}: the value ends before the record does", reason="truncated"
        ) from None
    except SchemaResolutionError as exc:
        raise DeserializationError(
            f"schema id {schema_id}: the writer schema cannot be read as the event type's: {exc}",
            reason="schema-mismatch",
        ) from None
    except Exception as exc:  # corrupt bytes surface as IndexError, ValueError, UnicodeError...
        raise DeserializationError(
            f"schema id {schema_id}: not valid Avro for its schema: {exc!r}", reason="malformed"
        ) from None


def _trusts_avro(model: type[Event], plain: bool) -> bool:
    """Whether validation can add nothing to what fastavro decoded with the model's schema.

    True for a plain model that declares no validators, no post-init hook, no private
    attributes and no config of its own, since any of those could change values.
    """
    decorators = model.__pydantic_decorators__
    return (
        plain
        and not (decorators.validators or decorators.field_validators)
        and not (decorators.root_validators or decorators.model_validators)
        and model.__pydantic_post_init__ is None
        and not model.__private_attributes__
        and model.model_config == Event.model_config
    )


def _builder(model: type[E]) -> Callable[[dict[str, Any]], E]:
    """An instance from trusted values: what ``model_construct`` does, without its overhead."""

    def build(values: dict[str, Any]) -> E:
        event = _new_object(model)
        _set(event, "__dict__", values)
        _set(event, "__pydantic_fields_set__", set(values))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event

    return build


def _dict_of(event: Event) -> dict[str, Any]:
    return event.__dict__


def _datum(value: Any) -> Any:
    """Nested models as dicts of their fields, as fastavro takes records.

    Deliberately not ``model_dump``: a user's field serializer must not change what is
    written to Avro.
    """
    if isinstance(value, BaseModel):
        return {name: _datum(item) for name, item in value.__dict__.items()}
    if isinstance(value, list):
        return [_datum(item) for item in value]
    if isinstance(value, dict):
        return {key: _datum(item) for key, item in value.items()}
    return value


def _refuse_naive(value: Any, path: str) -> None:
    """Raise for the first naive datetime in *value* (fastavro takes them as local time)."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise SerializationError(
                f"{path} is a naive datetime; events carry instants, give it a timezone "
                "(e.g. datetime.now(UTC))",
                reason="invalid",
            )
    elif isinstance(value, BaseModel):
        for name, item in value.__dict__.items():
            _refuse_naive(item, f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_naive(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_naive(item, f"{path}[{key!r}]")


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
