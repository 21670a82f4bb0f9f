"""Retries through topics: the policy, the topic names and the headers a retried record carries.

A failed record is forwarded, byte for byte, to ``{topic}.{group}.retry.{delay}``: one
topic per consumer group (another group reading the same source never sees the retry)
and per distinct delay, so within a partition of a retry topic the due times rise with
the offsets and the head of the partition is always the next record due. The agent
consumes its retry topics too; a record that is not yet due is not slept on: its
partition is paused and rewound to it until it is due (see the worker's poll thread).
"""

from __future__ import annotations

from confluent_kafka import Message

from mesh.config import RetryPolicy
from mesh.headers import DUE_TS, last, to_int
from mesh.runtime.failure import ErrorKind, failure_headers

__all__ = [
    "RetryPolicy",
    "due_at_ms",
    "format_delay",
    "retry_headers",
    "retry_topic",
]


def format_delay(delay_ms: int) -> str:
    """``1s``, ``5m``, ``1500ms``: the suffix of a retry topic."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def retry_topic(source_topic: str, group_id: str, delay_ms: int) -> str:
    return f"{source_topic}.{group_id}.retry.{format_delay(delay_ms)}"


def due_at_ms(msg: Message) -> int | None:
    """When a retried (or delayed) record becomes due, or None for a record without the header."""
    return to_int(last(msg.headers(), DUE_TS))


def retry_headers(
    msg: Message,
    *,
    retried: bool,
    kind: ErrorKind,
    error: BaseException,
    attempt: int,
    group_id: str,
    due_ms: int,
) -> list[tuple[str, bytes]]:
    """The record's own headers, the failure headers, and when the retry is due."""
    headers = failure_headers(
        msg, retried=retried, kind=kind, error=error, attempt=attempt, group_id=group_id
    )
    headers.append((DUE_TS, str(due_ms).encode()))
    return headers
