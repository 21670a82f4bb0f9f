"""Which Kafka errors are about the record itself, so that retrying it can never help.

librdkafka retries a produce for ``message.timeout.ms`` on every retriable error, so a
delivery report that still carries an error is final for that attempt. For the errors
below it is final for the record too (the same bytes, sent again to the same topic, fail
the same way): mesh dead-letters what it was sending instead of stopping the worker.
Anything else (a timeout, a broker away, a fenced producer) may pass, so the worker stops
without committing and the record is consumed again after a restart.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

__all__ = ["is_permanent", "is_too_large"]

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

_PERMANENT = _TOO_LARGE | {
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
    KafkaError.POLICY_VIOLATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,  # reported once metadata says so: auto-create is off
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}


def is_permanent(error: KafkaError) -> bool:
    """Whether sending the same record to the same topic again would fail the same way."""
    return error.code() in _PERMANENT


def is_too_large(error: KafkaError) -> bool:
    """The record (or its batch) is over ``message.max.bytes``: the client's or the topic's."""
    return error.code() in _TOO_LARGE
