"""What a failed record carries on its way to a retry or dead-letter topic.

The record goes on byte for byte (key, value, its own headers) with the failure headers
of the :mod:`mesh.headers` contract. ``mesh.original.*`` and ``mesh.first-failure-ts``
are written on the first hop and kept after it; the other failure headers describe the
latest failure and replace the previous hop's.

Only a record read from one of the agent's own retry topics is a later hop. Where a
record goes and how many attempts it had follow from where it was consumed, never from
its headers alone: a record on a source topic may carry another app's failure headers (a
dead letter copied there by ``mesh replay``, or a forged one), which would otherwise send
its retries to a topic no agent reads. On a first hop such headers are kept as history
(:data:`~mesh.headers.HISTORY_PREFIX`).
"""

from __future__ import annotations

import time
import traceback
from enum import StrEnum

from confluent_kafka import Message

from mesh.headers import (
    ATTEMPT,
    ERROR_KIND,
    EXCEPTION_CLASS,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    FAILURE_HEADERS,
    FIRST_FAILURE_TS,
    HISTORY_PREFIX,
    ORIGINAL_GROUP,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TIMESTAMP,
    ORIGINAL_TOPIC,
    last,
    to_int,
)

__all__ = [
    "DeadLetterReason",
    "ErrorKind",
    "attempt_of",
    "failure_headers",
    "first_failure_of",
    "qualified_name",
]

MAX_MESSAGE_BYTES = 4096
MAX_STACKTRACE_BYTES = 8192
_ORIGINALS = (
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    ORIGINAL_GROUP,
)


class ErrorKind(StrEnum):
    """What went wrong (``mesh.error.kind``)."""

    TRANSIENT = "transient"  # the handler raised: worth another try
    FATAL = "fatal"  # a non-retryable error, or an output that cannot be encoded
    DESERIALIZATION = "deserialization"  # the record cannot be decoded into its event type
    TIMEOUT = "timeout"  # the handler exceeded its timeout


class DeadLetterReason(StrEnum):
    """Why a record was given up on (``mesh.dlq.reason``)."""

    EXHAUSTED = "exhausted"  # every attempt of the retry policy failed
    FATAL = "fatal"  # retrying cannot help: see ErrorKind.FATAL
    DESERIALIZATION = "deserialization"
    DEADLINE = "deadline"  # the next retry would be due past the retry policy's deadline
    #: The broker refused, for good, a record the agent had to write: an output, or the
    #: record itself on its way to a retry topic (too large, not authorized, no topic).
    REFUSED = "refused"

    @classmethod
    def of(cls, kind: ErrorKind) -> DeadLetterReason:
        """The reason a record failing with *kind* is dead-lettered for."""
        if kind is ErrorKind.DESERIALIZATION:
            return cls.DESERIALIZATION
        return cls.FATAL if kind is ErrorKind.FATAL else cls.EXHAUSTED


def attempt_of(headers: list[tuple[str, bytes]] | None) -> int:
    """Attempts already made on this record (0 for a record that never failed)."""
    return to_int(last(headers, ATTEMPT)) or 0


def first_failure_of(headers: list[tuple[str, bytes]] | None) -> int | None:
    """When the record first failed (epoch ms), or None for a record that never failed."""
    return to_int(last(headers, FIRST_FAILURE_TS))


def failure_headers(
    msg: Message,
    *,
    retried: bool,
    kind: ErrorKind,
    error: BaseException,
    attempt: int,
    group_id: str,
) -> list[tuple[str, bytes]]:
    """The record's own headers, then the failure headers of this hop.

    *retried*: *msg* was read from one of the agent's retry topics (a later hop).
    *attempt* counts the attempts made so far, the one that just failed included.
    """
    own = msg.headers() or []
    previous = {k: v for k, v in own if k in FAILURE_HEADERS}
    kept = [(k, v) for k, v in own if k not in FAILURE_HEADERS]
    if not retried:
        previous, kept = {}, [*_as_history(own), *kept]
    if previous.get(ORIGINAL_TOPIC) is not None:  # a later hop: keep the first one's
        originals = [(name, previous[name]) for name in _ORIGINALS if previous.get(name)]
    else:
        _, timestamp_ms = msg.timestamp()
        originals = [
            (ORIGINAL_TOPIC, (msg.topic() or "").encode()),
            (ORIGINAL_PARTITION, str(msg.partition()).encode()),
            (ORIGINAL_OFFSET, str(msg.offset()).encode()),
            (ORIGINAL_TIMESTAMP, str(timestamp_ms).encode()),
            (ORIGINAL_GROUP, group_id.encode()),
        ]
    first_failure = previous.get(FIRST_FAILURE_TS) or str(time.time_ns() // 1_000_000).encode()
    stacktrace = _stacktrace(error).encode()
    return [
        *kept,
        *originals,
        (FIRST_FAILURE_TS, first_failure),
        (ATTEMPT, str(attempt).encode()),
        (ERROR_KIND, kind.value.encode()),
        (EXCEPTION_CLASS, qualified_name(type(error)).encode()),
        (EXCEPTION_MESSAGE, _head(str(error).encode(), MAX_MESSAGE_BYTES)),
        # The most recent frames are the ones that tell what failed.
        (EXCEPTION_STACKTRACE, _tail(stacktrace, MAX_STACKTRACE_BYTES)),
    ]


def _as_history(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Failure headers of an earlier life of the record, renamed so that none is acted on."""
    return [
        (HISTORY_PREFIX + name.removeprefix("mesh."), value)
        for name, value in headers
        if name in FAILURE_HEADERS
    ]


def _stacktrace(error: BaseException) -> str:
    """The traceback, without source lines or chained causes.

    ``traceback.format_exception`` reads every frame's source line and took 145 us per
    failure here, enough to halve healthy throughput when a fifth of the events retry;
    file, line and function (as in a log's traceback) take a few microseconds.
    """
    frames = [
        f'  File "{frame.f_code.co_filename}", line {line}, in {frame.f_code.co_name}\n'
        for frame, line in traceback.walk_tb(error.__traceback__)
    ]
    return "".join(
        ["Traceback (most recent call last):\n", *frames, *traceback.format_exception_only(error)]
    )


def qualified_name(cls: type) -> str:
    """``ValueError``, ``mypkg.errors.BadInput``: how ``non_retryable`` and filters name it."""
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _head(raw: bytes, limit: int) -> bytes:
    """At most *limit* bytes of *raw*, cut on a character boundary."""
    return raw[:limit].decode("utf-8", "ignore").encode()


def _tail(raw: bytes, limit: int) -> bytes:
    return raw[-limit:].decode("utf-8", "ignore").encode()
