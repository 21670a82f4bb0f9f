"""Kafka header names mesh writes: a stable contract for tools that read mesh topics.

All values are UTF-8 strings; timestamps are epoch milliseconds. Renaming any of these
breaks users' dashboards, replay filters and redrive scripts, so they only ever grow.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT",
    "CAUSATION_ID",
    "CORRELATION_ID",
    "DLQ_REASON",
    "DUE_TS",
    "ERROR_KIND",
    "EVENT_ID",
    "EVENT_TYPE",
    "EXCEPTION_CLASS",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "FIRST_FAILURE_TS",
    "ORIGINAL_GROUP",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TIMESTAMP",
    "ORIGINAL_TOPIC",
    "PRODUCED_BY",
    "TRACEPARENT",
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
DUE_TS = "mesh.due-ts"  # retry topics: must not run before this time
EXCEPTION_CLASS = "mesh.exception.class"  # qualified name, e.g. "mypkg.errors.BadInput"
EXCEPTION_MESSAGE = "mesh.exception.message"  # bounded
EXCEPTION_STACKTRACE = "mesh.exception.stacktrace"  # bounded, most recent frames kept
ERROR_KIND = "mesh.error.kind"  # transient, fatal, deserialization, timeout
DLQ_REASON = "mesh.dlq.reason"  # dead-letter topics: exhausted, fatal, deserialization, deadline
