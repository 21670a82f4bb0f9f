"""Dead letters: records an agent could not process, kept with the reason for review and redrive.

The record is forwarded byte for byte (key, value, user headers) to
``{source_topic}.{group}.dlq``, one dead-letter topic per source topic and consumer
group, so another group reading the same source never sees this group's failures.
"""

from __future__ import annotations

import time
import traceback
from enum import StrEnum

from confluent_kafka import Message

__all__ = ["ErrorKind", "dead_letter_headers", "dead_letter_topic"]

HEADER_PREFIX = "mesh.dlq."
_DROPPED = (HEADER_PREFIX, "mesh.retry.")
_MAX_MESSAGE_BYTES = 4096
_MAX_TRACE_BYTES = 8192


class ErrorKind(StrEnum):
    """Why a record was dead-lettered."""

    HANDLER = "handler"
    TIMEOUT = "timeout"
    DESERIALIZATION = "deserialization"
    SERIALIZATION = "serialization"  # the handler returned an event that cannot be encoded


def dead_letter_topic(source_topic: str, group_id: str) -> str:
    return f"{source_topic}.{group_id}.dlq"


def dead_letter_headers(
    msg: Message,
    *,
    kind: ErrorKind,
    error: BaseException,
    agent: str,
    group_id: str,
    attempts: int,
    origin: tuple[str, int, int],
) -> list[tuple[str, bytes]]:
    """The record's own headers (minus earlier dead-letter and retry headers) plus why it failed.

    *origin* is where the record was first consumed (topic, partition, offset), which
    differs from *msg* when it failed for the last time in a retry topic.
    """
    error_class = type(error)
    qualified = (
        error_class.__qualname__
        if error_class.__module__ == "builtins"
        else f"{error_class.__module__}.{error_class.__qualname__}"
    )
    trace = "".join(traceback.format_exception(error))[-_MAX_TRACE_BYTES:]
    _, timestamp = msg.timestamp()
    reason = {
        "error-kind": kind.value,
        "error-class": qualified,
        "error-message": str(error)[:_MAX_MESSAGE_BYTES],
        "error-trace": trace,
        "agent": agent,
        "group": group_id,
        "attempts": str(attempts),
        "original-topic": origin[0],
        "original-partition": str(origin[1]),
        "original-offset": str(origin[2]),
        "original-timestamp": str(timestamp),
        "failed-at": str(int(time.time() * 1000)),
    }
    kept = [(k, v) for k, v in (msg.headers() or []) if not k.startswith(_DROPPED)]
    return kept + [(HEADER_PREFIX + k, v.encode()) for k, v in reason.items()]
