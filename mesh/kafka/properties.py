"""Which of the user's ``[kafka]`` properties apply to which kind of client.

librdkafka warns (CONFWARN) at every client given a property that is not its own, so a
consumer-only property in ``mesh.toml`` made every producer and admin client warn at
start. Connection and security properties (SASL/SSL) apply to every client.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["Client", "applicable"]

Client = Literal["consumer", "producer", "admin"]

#: librdkafka 2.16.0's consumer-only (C) and producer-only (P) properties, aliases and
#: deprecated names included, callbacks left out (they cannot be written in mesh.toml):
#: the C/P column of its CONFIGURATION.md, global and topic properties.
_CONSUMER_ONLY = frozenset({
    "auto.commit.enable", "auto.commit.interval.ms", "auto.offset.reset", "check.crcs",
    "consume.callback.max.messages", "coordinator.query.interval.ms", "enable.auto.commit",
    "enable.auto.offset.store", "enable.partition.eof", "fetch.error.backoff.ms",
    "fetch.max.bytes", "fetch.message.max.bytes", "fetch.min.bytes", "fetch.queue.backoff.ms",
    "fetch.wait.max.ms", "group.id", "group.instance.id", "group.protocol",
    "group.protocol.type", "group.remote.assignor", "heartbeat.interval.ms",
    "isolation.level", "max.partition.fetch.bytes", "max.poll.interval.ms",
    "max.poll.records", "offset.store.method", "offset.store.path",
    "offset.store.sync.interval.ms", "partition.assignment.strategy",
    "queued.max.messages.kbytes", "queued.min.messages", "session.timeout.ms",
    "share.acknowledgement.mode",
})  # fmt: skip
_PRODUCER_ONLY = frozenset({
    "acks", "batch.num.messages", "batch.size", "compression.codec", "compression.level",
    "compression.type", "delivery.report.only.error", "delivery.timeout.ms",
    "enable.gapless.guarantee", "enable.idempotence", "linger.ms", "message.send.max.retries",
    "message.timeout.ms", "partitioner", "produce.offset.report",
    "queue.buffering.backpressure.threshold", "queue.buffering.max.kbytes",
    "queue.buffering.max.messages", "queue.buffering.max.ms", "queuing.strategy",
    "request.required.acks", "request.timeout.ms", "retries", "sticky.partitioning.linger.ms",
    "transaction.timeout.ms", "transactional.id",
})  # fmt: skip
_NOT_FOR: dict[Client, frozenset[str]] = {
    "consumer": _PRODUCER_ONLY,
    "producer": _CONSUMER_ONLY,
    "admin": _CONSUMER_ONLY | _PRODUCER_ONLY,
}


def applicable(properties: dict[str, Any], client: Client) -> dict[str, Any]:
    """Of *properties* (librdkafka's), those that apply to *client*."""
    foreign = _NOT_FOR[client]
    return {key: value for key, value in properties.items() if key not in foreign}
