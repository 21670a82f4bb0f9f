"""Dead letters: records an agent could not process, kept with the reason for review and redrive.

The record is forwarded byte for byte (key, value, user headers) to the dead-letter
topic of its source topic and consumer group (:mod:`mesh.runtime.topology`).
"""

from __future__ import annotations

from confluent_kafka import Message

from mesh.headers import DLQ_AGENT, DLQ_REASON
from mesh.runtime.failure import DeadLetterReason, ErrorKind, failure_headers

__all__ = ["dead_letter_headers"]


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
