"""Kafka header names mesh writes: a stable contract for tools that read mesh topics.

All values are UTF-8 strings; timestamps are epoch milliseconds. Renaming any of these
breaks users' dashboards, replay filters and redrive scripts, so they only ever grow.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ATTEMPT",
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DELAY_TARGET",
    "DLQ_AGENT",
    "DLQ_REASON",
    "DLQ_VALUE_BYTES",
    "DUE_TS",
    "ERROR_KIND",
    "EVENT_ID",
    "EVENT_TYPE",
    "EXCEPTION_CLASS",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "FAILURE_HEADERS",
    "FIRST_FAILURE_TS",
    "HISTORY_PREFIX",
    "ORIGINAL_GROUP",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TIMESTAMP",
    "ORIGINAL_TOPIC",
    "PRODUCED_BY",
    "REPLAY_COUNT",
    "REPLAY_ID",
    "TRACEPARENT",
    "last",
    "to_int",
]

# -- every event (see mesh.envelope) -------------------------------------------------
EVENT_ID = "mesh.event-id"  # unique, time-ordered
EVENT_TYPE = "mesh.event-type"  # e.g. "research.ResearchRequested"
CORRELATION_ID = "mesh.correlation-id"  # the chain the event belongs to
CAUSATION_ID = "mesh.causation-id"  # the event id that caused this one
TRACEPARENT = "traceparent"  # W3C trace context
PRODUCED_BY = "mesh.produced-by"  # agent name, or the publishing app

# -- records forwarded to retry and dead-letter topics ----------------------------------
ORIGINAL_TOPIC = "mesh.original.topic"  # where the record was first consumed (first hop only)
ORIGINAL_PARTITION = "mesh.original.partition"
ORIGINAL_OFFSET = "mesh.original.offset"
ORIGINAL_TIMESTAMP = "mesh.original.timestamp"
ORIGINAL_GROUP = "mesh.original.group"  # the consumer group that failed on it
ATTEMPT = "mesh.attempt"  # attempts made so far, including the one that just failed
FIRST_FAILURE_TS = "mesh.first-failure-ts"
DUE_TS = "mesh.due-ts"  # retry and delay topics: must not run (or arrive) before this time
EXCEPTION_CLASS = "mesh.exception.class"  # qualified name, e.g. "mypkg.errors.BadInput"
EXCEPTION_MESSAGE = "mesh.exception.message"  # bounded
EXCEPTION_STACKTRACE = "mesh.exception.stacktrace"  # bounded, most recent frames kept
ERROR_KIND = "mesh.error.kind"  # transient, fatal, deserialization, timeout
DLQ_REASON = "mesh.dlq.reason"  # exhausted, fatal, deserialization, deadline, refused
DLQ_AGENT = "mesh.dlq.agent"  # dead-letter topics: the agent that gave up on the record
#: On a dead letter written without its value (too large to forward): the value's size.
DLQ_VALUE_BYTES = "mesh.dlq.value-bytes"

# -- records sent back by `mesh dlq redrive` --------------------------------------------
REDRIVE_COUNT = "mesh.redrive-count"  # how often the record was sent back; caps redrives

# -- delay topics (delayed publish and emit) --------------------------------------------
DELAY_TARGET = "mesh.delay.target"  # the topic the record is delivered to at mesh.due-ts

#: A record consumed from a source topic may carry failure headers of another group or
#: app (a dead letter copied into a topic by replay): they are history, not instructions,
#: and a new failure keeps them under this prefix (``mesh.history.dlq.reason``).
HISTORY_PREFIX = "mesh.history."

#: Headers that describe a failure (or a retry) of a record, not the record itself: a
#: new failure replaces them, and a redriven record leaves them behind.
FAILURE_HEADERS = frozenset(
    {
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        ORIGINAL_GROUP,
        ATTEMPT,
        FIRST_FAILURE_TS,
        DUE_TS,
        EXCEPTION_CLASS,
        EXCEPTION_MESSAGE,
        EXCEPTION_STACKTRACE,
        ERROR_KIND,
        DLQ_REASON,
        DLQ_AGENT,
        DLQ_VALUE_BYTES,
    }
)

# -- records copied by `mesh replay --to-topic` -----------------------------------------
REPLAY_ID = "mesh.replay-id"  # the replay run that wrote the copy
REPLAY_COUNT = "mesh.replay-count"  # times the record was replayed; caps replay loops


def last(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The value of header *name*; of a repeated one the last, which is the one readers act on."""
    for key, value in reversed(headers or ()):
        if key == name:
            return value
    return None


def to_int(raw: bytes | None) -> int | None:
    """A header's integer value; None when it is absent or not a number."""
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
