"""Topic provisioning: create what mesh needs, idempotently, and report what differs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from mesh.errors import BrokerError

__all__ = ["TopicSpec", "ensure_topics", "existing_topics", "retention_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic mesh needs: name, size and topic-level configs (``cleanup.policy`` ...).

    Replication -1 is the broker's ``default.replication.factor``: a cluster of three
    gets three copies without mesh knowing its size.
    """

    name: str
    partitions: int
    replication_factor: int = -1
    config: dict[str, str] = field(default_factory=dict)


def retention_config(seconds: float | None) -> dict[str, str]:
    """``retention.ms`` for records kept *seconds*, or forever (-1) for None.

    Set explicitly: a topic without it gets the broker's default, a week on Kafka.
    """
    return {"retention.ms": "-1" if seconds is None else str(round(seconds * 1000))}


def existing_topics(admin: AdminClient, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, from a metadata request for *all* topics.

    Never asks for one topic by name: some brokers (Tansu) create a topic they are asked about.
    """
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics: {exc.args[0]}") from None
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()}


def ensure_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], *, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics of *specs*; return the names created.

    A topic that exists with fewer partitions than asked for is logged, not altered:
    adding partitions moves keys to other partitions and breaks per-key order.
    """
    wanted = {spec.name: spec for spec in specs}
    present = existing_topics(admin)
    for name, spec in wanted.items():
        if name in present and present[name] < spec.partitions:
            log.warning(
                "topic %s has %d partitions, fewer than the %d configured; "
                "parallelism is capped at %d",
                name,
                present[name],
                spec.partitions,
                present[name],
            )
    missing = [spec for name, spec in wanted.items() if name not in present]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                config=dict(spec.config),
            )
            for spec in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                raise BrokerError(f"cannot create topic {name}: {error.str()}") from None
    return created
