"""Dead letters: records an agent could not process, kept with the reason for review and redrive.

The record is forwarded byte for byte (key, value, user headers) to
``{source_topic}.{group}.dlq``, one dead-letter topic per source topic and consumer
group, so another group reading the same source never sees this group's failures.
"""

from __future__ import annotations

from confluent_kafka import Message

from mesh.headers import DLQ_AGENT, DLQ_REASON
from mesh.runtime.failure import DeadLetterReason, ErrorKind, failure_headers

__all__ = ["dead_letter_headers", "dead_letter_topic"]


def dead_letter_topic(source_topic: str, group_id: str) -> str:
    return f"{source_topic}.{group_id}.dlq"


def dead_letter_headers(
    msg: Message,
    *,
    retried: bool,
    kind: ErrorKind,
    error: BaseException,
    attempt: int,
    group_id: str,
    agent: str,
    reason: DeadLetterReason | None = None,
) -> list[tuple[str, bytes]]:
    """The record's own headers, the failure headers, the reason and the agent that gave up.

    The reason, unless given (``deadline``), follows from *kind*: ``deserialization``,
    ``fatal``, or else ``exhausted`` (a transient error or a timeout reaches the dead
    letters only after its last attempt).
    """
    headers = failure_headers(
        msg, retried=retried, kind=kind, error=error, attempt=attempt, group_id=group_id
    )
    reason = reason or DeadLetterReason.of(kind)
    headers.append((DLQ_REASON, reason.value.encode()))
    headers.append((DLQ_AGENT, agent.encode()))
    return headers
