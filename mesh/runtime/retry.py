"""Retries through topics: the policy, the topic names and the headers a retried record carries.

A failed record is forwarded, byte for byte, to ``{topic}.{group}.retry.{delay}``: one
topic per consumer group (another group reading the same source never sees the retry)
and per distinct delay, so within a partition of a retry topic the due times rise with
the offsets and the head of the partition is always the next record due. The agent
consumes its retry topics too; a record that is not yet due is not slept on: its
partition is paused and rewound to it until it is due (see the worker's poll thread).
"""

from __future__ import annotations

import time

from confluent_kafka import Message

from mesh.config import RetryPolicy

__all__ = [
    "RETRY_ATTEMPT",
    "RETRY_DUE_AT",
    "RetryPolicy",
    "attempt_of",
    "due_at_ms",
    "format_delay",
    "origin_of",
    "retry_headers",
    "retry_topic",
]

HEADER_PREFIX = "mesh.retry."
RETRY_ATTEMPT = "mesh.retry.attempt"  # attempts made so far (1 after the first failure)
RETRY_DUE_AT = "mesh.retry.due-at"  # epoch ms before which the record must not run
_ORIGINAL = "mesh.retry.original-"


def format_delay(delay_ms: int) -> str:
    """``1s``, ``5m``, ``1500ms``: the suffix of a retry topic."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def retry_topic(source_topic: str, group_id: str, delay_ms: int) -> str:
    return f"{source_topic}.{group_id}.retry.{format_delay(delay_ms)}"


def attempt_of(headers: list[tuple[str, bytes]] | None) -> int:
    """Attempts already made on this record (0 for a record never retried)."""
    for key, value in reversed(headers or ()):
        if key == RETRY_ATTEMPT:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def due_at_ms(msg: Message) -> int | None:
    """When a retried record becomes due, or None for a record without the header."""
    for key, value in reversed(msg.headers() or ()):
        if key == RETRY_DUE_AT:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def origin_of(msg: Message) -> tuple[str, int, int]:
    """Where the record was first consumed: (topic, partition, offset), across retries."""
    found = {k: v for k, v in msg.headers() or () if k.startswith(_ORIGINAL)}
    try:
        return (
            found[_ORIGINAL + "topic"].decode(),
            int(found[_ORIGINAL + "partition"]),
            int(found[_ORIGINAL + "offset"]),
        )
    except (KeyError, ValueError):
        return msg.topic(), msg.partition(), msg.offset()


def retry_headers(
    msg: Message, *, attempt: int, due_ms: int, error: BaseException
) -> list[tuple[str, bytes]]:
    """The record's own headers, minus older retry headers, plus this retry's."""
    topic, partition, offset = origin_of(msg)
    kept = [(k, v) for k, v in (msg.headers() or []) if not k.startswith(HEADER_PREFIX)]
    return [
        *kept,
        (RETRY_ATTEMPT, str(attempt).encode()),
        (RETRY_DUE_AT, str(due_ms).encode()),
        (_ORIGINAL + "topic", topic.encode()),
        (_ORIGINAL + "partition", str(partition).encode()),
        (_ORIGINAL + "offset", str(offset).encode()),
        ("mesh.retry.error-class", type(error).__qualname__.encode()),
        ("mesh.retry.error-message", str(error)[:1024].encode()),
        ("mesh.retry.failed-at", str(int(time.time() * 1000)).encode()),
    ]
