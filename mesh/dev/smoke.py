"""A round trip through a broker and registry (``mesh dev smoke``): is the stack usable?

Creates a fresh topic (with the configured topic defaults), registers a tiny event type's
schema, publishes Avro events with mesh headers through the agents' publisher, reads them
back with :class:`mesh.kafka.reader.Tail` and compares values and headers. Every step is bounded:
an unreachable stack fails in seconds with a one-line hint, never a hang. The topic is
deleted afterwards.
"""

from __future__ import annotations

import logging
import socket
import time
import types
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from mesh.config import Settings, redact_url
from mesh.envelope import Envelope
from mesh.errors import BrokerError, MeshError, RegistryError
from mesh.event import Event
from mesh.kafka.clients import admin_config
from mesh.kafka.reader import Tail
from mesh.kafka.topics import existing_topics
from mesh.runtime.publisher import Publisher
from mesh.serde import Serde

__all__ = ["SmokePing", "SmokeResult", "run_smoke"]

log = logging.getLogger(__name__)

_HINT = "run `mesh dev up`, or point MESH_BOOTSTRAP_SERVERS / MESH_REGISTRY_URL at a stack"


class SmokePing(Event, name="mesh.smoke.SmokePing", key="run_id"):
    """One event of a smoke run; each run publishes a subclass bound to a fresh topic."""

    run_id: str
    seq: int
    sent_at: datetime


@dataclass(frozen=True)
class SmokeResult:
    """What a passing run did, and how long the round trip took."""

    bootstrap_servers: str
    registry_url: str
    topic: str
    schema_id: int
    events: int
    publish_ms: float
    round_trip_ms: float


def run_smoke(settings: Settings, *, count: int = 10, timeout_s: float = 10.0) -> SmokeResult:
    """Publish *count* events and read them back; raise a :class:`MeshError` on any fault."""
    check_reachable(settings, timeout_s=min(timeout_s, 3.0))
    admin = AdminClient(admin_config(settings))
    existing_topics(admin, timeout_s=timeout_s)  # the broker answers Kafka, not just TCP
    topic = f"mesh-smoke-{uuid.uuid4().hex[:12]}"
    try:
        return _round_trip(settings, topic, count=count, timeout_s=timeout_s)
    finally:
        _delete_topic(admin, topic, timeout_s)


def check_reachable(settings: Settings, *, timeout_s: float = 3.0) -> None:
    """Fail fast, with a hint, when nothing listens at the broker or registry address."""
    brokers = [b.strip() for b in settings.bootstrap_servers.split(",") if b.strip()]
    if not any(_connects(*_host_port(b, 9092), timeout_s) for b in brokers):
        raise BrokerError(f"broker {settings.bootstrap_servers} not reachable: {_HINT}")
    url = urlsplit(settings.registry_url)
    default_port = 443 if url.scheme == "https" else 80
    if not _connects(url.hostname or "", url.port or default_port, timeout_s):
        raise RegistryError(f"registry {redact_url(settings.registry_url)} not reachable: {_HINT}")


def _round_trip(settings: Settings, topic: str, *, count: int, timeout_s: float) -> SmokeResult:
    serde = Serde(
        SchemaRegistryClient({**settings.registry_config(), "timeout": timeout_s}),
        subject_strategy=settings.subject_strategy,
    )
    ping = types.new_class(
        "SmokePing", (SmokePing,), {"name": SmokePing.event_type(), "topic": topic, "key": "run_id"}
    )
    schema_id = serde.register(ping, topic)
    publisher = Publisher(settings, serde)
    publisher.ensure_topics([ping])  # as an agent's app creates its topics
    run_id = uuid.uuid4().hex
    sent: list[tuple[Event, Envelope]] = []
    acks: list[tuple[KafkaError | None, Message]] = []
    with Tail(settings, topic, from_beginning=True, serde=serde, timeout_s=timeout_s) as reader:
        started = time.perf_counter()
        for seq in range(count):
            now = datetime.now(UTC)  # Avro timestamp-millis keeps milliseconds only
            event = ping(
                run_id=run_id,
                seq=seq,
                sent_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
            )
            envelope = Envelope.new_chain(ping.event_type(), "mesh-smoke")
            publisher.send(event, envelope, on_delivery=lambda err, msg: acks.append((err, msg)))
            sent.append((event, envelope))
        publisher.flush(timeout_s)
        published = time.perf_counter()
        failed = [err for err, _ in acks if err is not None]
        if len(acks) < count or failed:
            reason = failed[0].str() if failed else f"{count - len(acks)} not acknowledged"
            raise BrokerError(f"smoke: publishing to {topic} failed: {reason}")
        received = list(reader.records(count=count, idle_timeout_s=timeout_s))
        finished = time.perf_counter()
    if len(received) < count:
        raise BrokerError(f"smoke: read back {len(received)} of {count} events from {topic}")
    # One key, one partition: the order is kept, so a mismatch is a real fault.
    for seq, ((event, envelope), record) in enumerate(zip(sent, received, strict=True)):
        if record.value_error is not None or record.value != event.model_dump():
            raise MeshError(f"smoke: event {seq} came back as {record.value_error or record.value}")
        if dict(record.headers) != dict(envelope.to_headers()):
            raise MeshError(f"smoke: event {seq} came back with headers {dict(record.headers)}")
    return SmokeResult(
        bootstrap_servers=settings.bootstrap_servers,
        registry_url=redact_url(settings.registry_url),
        topic=topic,
        schema_id=schema_id,
        events=count,
        publish_ms=(published - started) * 1000,
        round_trip_ms=(finished - started) * 1000,
    )


def _delete_topic(admin: AdminClient, topic: str, timeout_s: float) -> None:
    """Best effort: a topic left behind is harmless, but the outcome must be waited for."""
    for future in admin.delete_topics([topic], operation_timeout=timeout_s).values():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:  # KafkaException, or the topic was never created
            log.debug("smoke: could not delete %s: %s", topic, exc)


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    return host.strip("[]"), int(port) if port.isdigit() else default_port


def _connects(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
