"""Every Kafka client mesh creates is configured here, by profile, and nowhere else.

=========  ====================================================  ===========================
profile    used by                                               what mesh fixes
=========  ====================================================  ===========================
agent      each agent's group consumer, the delay forwarder      offsets stored only for the
                                                                 finished prefix,
                                                                 cooperative-sticky
reader     tail, replay, trace, dlq, the demo's watcher,         a group id never joined,
           the registry's reader                                 nothing committed
producer   agents' outputs, retries, dead letters, replay        ``acks=all``, idempotence
           copies, the registry's writer
admin      topic creation, group offsets, lag                    nothing
=========  ====================================================  ===========================

Each profile's settings, lowest precedence first: Kafka's defaults, mesh's defaults for
the profile, the embedded broker's tuning (only when the broker is Tansu: see
:mod:`mesh.kafka.compat`), the user's ``[kafka]`` properties, the caller's overrides, and
last what mesh's guarantees rest on, which nothing overrides.

Of the user's properties each client gets those that apply to it: connection and
security ones (SASL/SSL) reach every client, consumer-only ones only consumers,
producer-only ones only producers; librdkafka would warn (CONFWARN) at every client given
a property not its own. An admin client gets neither kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from mesh.config import Settings
from mesh.kafka import compat
from mesh.kafka.properties import Client, applicable

__all__ = [
    "admin_config",
    "agent_consumer_config",
    "producer_config",
    "reader_config",
]

#: Agent consumers: what the runtime's offset handling relies on.
_AGENT_REQUIRED: dict[str, Any] = {
    "enable.auto.commit": True,  # commits what the worker *stores*, every interval
    "enable.auto.offset.store": False,  # the worker stores only the finished prefix
    "partition.assignment.strategy": "cooperative-sticky",
}
_AGENT_DEFAULTS: dict[str, Any] = {"auto.offset.reset": "earliest", "auto.commit.interval.ms": 1000}

#: Readers join no group and commit nothing, so no live group is ever touched.
_READER_REQUIRED: dict[str, Any] = {"enable.auto.commit": False, "enable.auto.offset.store": False}
_READER_DEFAULTS: dict[str, Any] = {
    # librdkafka stops fetching a partition whose prefetch queue is full for this long
    # (default 1 s): a reader slower than its fetches (a copy) then sat idle most of the
    # time, waiting for the next fetch (librdkafka #2879, #4275).
    "fetch.queue.backoff.ms": 100,
}

#: What the delivery guarantee rests on: no acknowledged event may be lost, and retries
#: never reorder or duplicate within a partition. The user's properties cannot change it.
_PRODUCER_REQUIRED: dict[str, Any] = {"acks": "all", "enable.idempotence": True}
#: Tuning the user's properties override (``compression.type=lz4`` on a real cluster).
#: murmur2_random is the Java client's partitioner: a key lands on the partition that
#: Java producers (Kafka Streams, Connect, Spring) pick for it, so per-key order holds
#: in an estate where both write. librdkafka's own default (CRC32) disagrees.
_PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "compression.type": "none",
    "partitioner": "murmur2_random",
}


def agent_consumer_config(
    settings: Settings, *, group_id: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A consumer in the group *group_id* whose offsets the runtime stores by hand."""
    return {
        **_AGENT_DEFAULTS,
        **compat.tuning(settings, "agent"),
        **_base(settings, "consumer"),
        **(overrides or {}),
        **_AGENT_REQUIRED,
        "group.id": group_id,
    }


def reader_config(settings: Settings, role: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that reads by assignment under a fresh group id it never joins."""
    return {
        **_READER_DEFAULTS,
        **compat.tuning(settings, "reader"),
        **_base(settings, "consumer"),
        **overrides,
        **_READER_REQUIRED,
        "group.id": f"mesh-{role}-{uuid.uuid4().hex[:12]}",
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """A durable producer: mesh's defaults, the user's properties, *overrides*, then
    what the delivery guarantee requires."""
    return {
        **_PRODUCER_DEFAULTS,
        **_base(settings, "producer"),
        **overrides,
        **_PRODUCER_REQUIRED,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """An admin client: the connection properties alone (SASL/SSL pass through).

    Also the base of the registry's own consumers and producer (``mesh registry serve``),
    which set what they need on top.
    """
    return _base(settings, "admin")


def _base(settings: Settings, client: Client) -> dict[str, Any]:
    """:meth:`Settings.kafka_config` less the user's properties meant for other clients."""
    return applicable(settings.kafka_config(), client)
