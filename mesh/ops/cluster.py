"""What a command checks and shows of the cluster: can it be reached (every client command
asks first), its topics with their sizes (``mesh topics``), its groups with their lag per
partition (``mesh groups``).

A command that cannot reach the broker must say so within seconds, naming the address it
tried: librdkafka alone retries silently for the whole request time-out and then reports
``_TRANSPORT`` without an address.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mesh.config import Settings, redact_url
from mesh.errors import BrokerError, InputError, RegistryError
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import TP, watermarks

__all__ = [
    "CONNECT_TIMEOUT_S",
    "GroupPartition",
    "TopicInfo",
    "check_broker",
    "check_registry",
    "group_lag",
    "topics",
]

#: How long a command waits for the broker or the registry before it says it cannot reach it.
CONNECT_TIMEOUT_S = 5.0

_WHERE_BROKER = (
    "start the dev stack with `mesh dev up`, or name a running broker with "
    "-b/--bootstrap-servers (or MESH_BOOTSTRAP_SERVERS, or bootstrap_servers in mesh.toml)"
)
_WHERE_REGISTRY = (
    "start the dev stack with `mesh dev up`, or name a running registry with "
    "--registry-url (or MESH_REGISTRY_URL, or registry_url in mesh.toml)"
)


def check_broker(settings: Settings, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`BrokerError` naming the address unless the broker answers within *timeout_s*.

    Refused connections to every bootstrap address fail at once; otherwise a metadata
    request (through the configured security settings) must answer in time.
    """
    address = settings.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    refused = _refusing(address)
    if refused is not None:
        raise BrokerError(
            f"cannot reach the Kafka broker at {address} ({refused}): {_WHERE_BROKER}"
        )
    admin = AdminClient({**admin_config(settings), "log_level": 0})
    try:
        admin.list_topics(timeout=max(deadline - time.monotonic(), 0.5))
    except KafkaException as exc:
        why = exc.args[0].str() if exc.args else str(exc)
        raise BrokerError(
            f"cannot reach the Kafka broker at {address} within {timeout_s:.0f} s ({why}): "
            f"{_WHERE_BROKER}"
        ) from None


def _refusing(bootstrap: str) -> str | None:
    """Why no bootstrap address accepts a TCP connection (None when one does, or may)."""
    reasons = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition("://")[2].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return None
        except ConnectionRefusedError:
            reasons.append("connection refused")
        except (OSError, ValueError):  # a slow or unresolvable host: let librdkafka decide
            return None
    return reasons[0] if reasons else None


def check_registry(settings: Settings, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RegistryError` naming the URL unless the registry answers in *timeout_s*."""
    url = redact_url(settings.registry_url)
    client = SchemaRegistryClient(
        {**settings.registry_config(), "timeout": timeout_s, "max.retries": 0}
    )
    try:
        client.get_subjects()
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            raise RegistryError(
                f"the schema registry at {url} refused the credentials: check registry_auth"
            ) from None
        raise RegistryError(f"the schema registry at {url} answered: {exc}") from None
    except Exception as exc:  # httpx's transport errors, TLS errors
        raise RegistryError(
            f"cannot reach the schema registry at {url} ({type(exc).__name__}: {exc}): "
            f"{_WHERE_REGISTRY}"
        ) from None


@dataclass(frozen=True)
class TopicInfo:
    """One topic: its partitions and how many records it holds (high minus low watermark)."""

    name: str
    partitions: int
    records: int

    def to_json(self) -> dict[str, object]:
        return {"topic": self.name, "partitions": self.partitions, "records": self.records}


def topics(settings: Settings, *, internal: bool = False) -> list[TopicInfo]:
    """Every topic, sorted by name; those starting with ``_`` only when *internal*."""
    metadata = AdminClient(admin_config(settings)).list_topics(timeout=CONNECT_TIMEOUT_S)
    counts = {
        name: len(meta.partitions)
        for name, meta in metadata.topics.items()
        if internal or not name.startswith("_")
    }
    lows, highs = _watermarks(settings, [(t, p) for t, n in counts.items() for p in range(n)])
    return [
        TopicInfo(
            name,
            n,
            sum(max(highs.get((name, p), 0) - lows.get((name, p), 0), 0) for p in range(n)),
        )
        for name, n in sorted(counts.items())
    ]


@dataclass(frozen=True)
class GroupPartition:
    """One partition a group reads: its committed offset (None: none yet), end and lag."""

    group: str
    state: str
    members: int
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)

    def to_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
        }


def group_lag(settings: Settings, groups: Iterable[str] = ()) -> list[GroupPartition]:
    """Each partition with a committed offset of *groups* (default: every group), with lag.

    ``members`` counts the members the broker reports (the embedded broker reports none
    even for an active group: read ``state``).
    """
    admin = AdminClient(admin_config(settings))
    wanted = list(groups)
    if not wanted:
        listed = admin.list_consumer_groups(request_timeout=CONNECT_TIMEOUT_S).result()
        wanted = sorted(g.group_id for g in listed.valid)
    if not wanted:
        return []
    described = {
        group: future.result()
        for group, future in admin.describe_consumer_groups(
            wanted, request_timeout=CONNECT_TIMEOUT_S
        ).items()
    }
    committed: dict[str, dict[TP, int | None]] = {}
    for group in wanted:
        (future,) = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=CONNECT_TIMEOUT_S
        ).values()
        committed[group] = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
            for tp in future.result().topic_partitions
        }
    unknown = [g for g in wanted if not committed[g] and _state(described[g]) == "DEAD"]
    if unknown and groups:
        raise InputError(f"no consumer group {', '.join(map(repr, unknown))}")
    _, ends = _watermarks(settings, [tp for offsets in committed.values() for tp in offsets])
    return [
        GroupPartition(
            group=group,
            state=_state(described[group]),
            members=len(described[group].members),
            topic=topic,
            partition=partition,
            committed=offset,
            end=ends.get((topic, partition), 0),
        )
        for group in wanted
        for (topic, partition), offset in sorted(committed[group].items())
    ]


def _state(description: object) -> str:
    state = getattr(description, "state", None)
    return str(getattr(state, "name", state or "UNKNOWN"))


def _watermarks(settings: Settings, parts: list[TP]) -> tuple[dict[TP, int], dict[TP, int]]:
    if not parts:
        return {}, {}
    consumer = Consumer(reader_config(settings, "cluster"))
    try:
        return watermarks(settings, consumer, parts, timeout_s=10.0)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the partitions' offsets: {exc.args[0]}") from None
    finally:
        consumer.close()
