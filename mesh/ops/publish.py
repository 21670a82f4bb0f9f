"""Publishing by hand (``mesh publish``): find an event type, build it from JSON, send it.

The event goes through the agents' own :class:`~mesh.runtime.publisher.Publisher`, so
its headers, key, topic and registry subject are exactly what an agent would produce.
Everything that can be wrong with the input is checked before anything is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message
from pydantic import ValidationError

from mesh.config import Settings
from mesh.envelope import CORRELATION_ID, Envelope
from mesh.errors import BrokerError, InputError
from mesh.event import Event
from mesh.runtime.app import Mesh
from mesh.runtime.publisher import Publisher
from mesh.serde import Serde

__all__ = [
    "Published",
    "event_from_json",
    "event_type_of",
    "extra_headers",
    "find_event_type",
    "publish_event",
]

#: Headers the envelope owns; a hand-set value would contradict it.
_RESERVED_PREFIXES = ("mesh.", "traceparent")


@dataclass(frozen=True)
class Published:
    """Where an event landed and the ids it was sent with."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event_type: str
    event_id: str
    correlation_id: str


def event_type_of(found: object, spec: str) -> type[Event]:
    """*found*, loaded from ``module:ClassName`` *spec*, checked to be an event type."""
    if not (isinstance(found, type) and issubclass(found, Event) and found is not Event):
        raise InputError(f"{spec!r} is not an event type (a subclass of mesh.Event)")
    return found


def find_event_type(name: str, app: Mesh | None) -> type[Event]:
    """The event type *app* knows by full name, Avro name or class name."""
    if app is None:
        raise InputError(
            f"event type {name!r}: give it as module:ClassName, or name the app that "
            "declares it with --app module:app (or MESH_APP)"
        )
    known = app.event_types
    matches = {
        t for full, t in known.items() if name in (full, t.__name__, full.rpartition(".")[2])
    }
    if len(matches) == 1:
        return matches.pop()
    if matches:
        names = ", ".join(sorted(t.event_type() for t in matches))
        raise InputError(f"event type {name!r} is ambiguous in app {app.name!r}: {names}")
    listed = ", ".join(sorted(known)) or "none"
    raise InputError(f"app {app.name!r} has no event type {name!r}; its event types: {listed}")


def event_from_json(model: type[Event], text: str) -> Event:
    """Validate *text*, a JSON object, as *model*; one line per invalid field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"event data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"event data must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(
            "\n".join(
                f"{model.__name__}.{'.'.join(map(str, error['loc'])) or '(root)'}: {error['msg']}"
                for error in exc.errors()
            )
        ) from None


def extra_headers(pairs: list[str]) -> tuple[tuple[str, bytes], ...]:
    """``key=value`` strings as Kafka headers; the envelope's own names are refused."""
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"header {pair!r} is not of the form key=value")
        if name.startswith(_RESERVED_PREFIXES):
            raise InputError(
                f"header {name!r} is set by mesh itself (use --correlation-id for {CORRELATION_ID})"
            )
        headers.append((name, value.encode()))
    return tuple(headers)


def publish_event(
    settings: Settings,
    event: Event,
    *,
    produced_by: str,
    key: str | None = None,
    correlation_id: str | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
    timeout_s: float = 30.0,
) -> Published:
    """Send *event* as the first of a new chain and wait for the broker's acknowledgement.

    *key* overrides the event type's key (by default its key field, else the event id).
    """
    envelope = Envelope.new_chain(
        event.event_type(), produced_by, correlation_id=correlation_id, headers=headers
    )
    publisher = Publisher(settings, Serde.from_settings(settings))
    record = publisher.encode(event, envelope)
    if key is not None:
        record = record._replace(key=key.encode())
    results: list[tuple[KafkaError | None, Message]] = []
    publisher.send_raw(*record, on_delivery=lambda err, msg: results.append((err, msg)))
    publisher.flush(timeout_s)
    if not results:
        raise BrokerError(f"the broker did not acknowledge the event within {timeout_s:.0f}s")
    err, msg = results[0]
    if err is not None:
        raise BrokerError(f"the broker refused the event: {err.str()}")
    return Published(
        topic=record.topic,
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=None if record.key is None else record.key.decode("utf-8", "replace"),
        event_type=envelope.event_type,
        event_id=envelope.event_id,
        correlation_id=envelope.correlation_id,
    )
