"""Retries through topics: what a failed attempt leads to, and the headers a retry carries.

A failed record is forwarded, byte for byte, to the retry topic of its delay (named in
:mod:`mesh.runtime.topology`). The agent consumes its retry topics too; a record that is
not yet due is not slept on: its partition is paused and rewound to it until it is due
(:mod:`mesh.runtime.parking`).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from mesh.config import RetryPolicy
from mesh.headers import DUE_TS, last, to_int
from mesh.runtime.failure import DeadLetterReason, ErrorKind, failure_headers

__all__ = [
    "DeadLetter",
    "Retry",
    "RetryPolicy",
    "decide",
    "due_at_ms",
    "retry_headers",
]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again: through the retry topic of *delay_ms*, due at *due_ms* (epoch ms)."""

    delay_ms: int
    due_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up: the record goes to the dead-letter topic, with *reason*."""

    kind: ErrorKind
    reason: DeadLetterReason


def decide(
    policy: RetryPolicy,
    error: BaseException,
    kind: ErrorKind,
    attempt: int,
    *,
    now_ms: int,
    first_failure_ms: int,
    jitter: bool = True,
) -> Retry | DeadLetter:
    """What attempt number *attempt* (1-based), failed with *error*, leads to.

    *first_failure_ms* is when the record first failed (now, on a first attempt): the
    policy's deadline counts from it. The worker and :func:`mesh.testing.call_agent`
    both decide through this.
    """
    if not policy.should_retry(error, attempt):
        if policy.is_non_retryable(error):
            kind = ErrorKind.FATAL
        return DeadLetter(kind, DeadLetterReason.of(kind))
    delay_ms = policy.delay_ms(attempt)
    due_ms = now_ms + (policy.jittered_ms(delay_ms) if jitter else delay_ms)
    if policy.past_deadline(first_failure_ms=first_failure_ms, due_ms=due_ms):
        return DeadLetter(kind, DeadLetterReason.DEADLINE)
    return Retry(delay_ms, due_ms)


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
