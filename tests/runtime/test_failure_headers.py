"""The failure headers of retried and dead-lettered records (mesh.headers contract)."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from mesh import headers as h
from mesh.runtime.dead_letter import dead_letter_headers
from mesh.runtime.failure import (
    MAX_MESSAGE_BYTES,
    MAX_STACKTRACE_BYTES,
    DeadLetterReason,
    ErrorKind,
    attempt_of,
    first_failure_of,
)
from mesh.runtime.retry import due_at_ms, retry_headers


class BadInput(Exception):
    pass


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as exc:
        return exc


def _values(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names)), names
    return {name: value.decode() for name, value in headers}


def _record(topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]]) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=b"k",
        value=b"v",
        headers=headers,
        timestamp=(1, 1_700_000_000_000),
    )


def test_first_hop_records_the_origin_and_later_hops_keep_it() -> None:
    source = _record("jobs", 2, 41, [(h.EVENT_ID, b"e1"), ("user", b"u")])
    first = retry_headers(
        source,
        retried=False,
        kind=ErrorKind.TRANSIENT,
        error=_raised(BadInput("nope")),
        attempt=1,
        group_id="app.worker",
        due_ms=1_700_000_001_000,
    )
    got = _values(first)
    assert got[h.EVENT_ID] == "e1"
    assert got["user"] == "u"
    assert got[h.ORIGINAL_TOPIC] == "jobs"
    assert (got[h.ORIGINAL_PARTITION], got[h.ORIGINAL_OFFSET]) == ("2", "41")
    assert got[h.ORIGINAL_TIMESTAMP] == "1700000000000"
    assert got[h.ORIGINAL_GROUP] == "app.worker"
    assert got[h.ATTEMPT] == "1"
    assert got[h.DUE_TS] == "1700000001000"
    assert got[h.ERROR_KIND] == "transient"
    assert got[h.EXCEPTION_CLASS] == f"{__name__}.BadInput"
    assert got[h.EXCEPTION_MESSAGE] == "nope"
    assert got[h.EXCEPTION_STACKTRACE].startswith("Traceback")

    hop = _record("jobs.app.worker.retry.1s", 0, 7, first)
    assert attempt_of(hop.headers()) == 1
    assert first_failure_of(hop.headers()) == int(got[h.FIRST_FAILURE_TS])
    assert due_at_ms(hop) == 1_700_000_001_000
    dead = _values(
        dead_letter_headers(
            hop,
            retried=True,
            kind=ErrorKind.TIMEOUT,
            error=_raised(TimeoutError()),
            attempt=2,
            group_id="app.worker",
            agent="worker",
        )
    )
    for name in (h.ORIGINAL_TOPIC, h.ORIGINAL_OFFSET, h.ORIGINAL_TIMESTAMP, h.FIRST_FAILURE_TS):
        assert dead[name] == got[name]
    assert dead[h.ATTEMPT] == "2"
    assert dead[h.ERROR_KIND] == "timeout"
    assert dead[h.EXCEPTION_CLASS] == "TimeoutError"
    assert dead[h.DLQ_REASON] == "exhausted"
    assert dead[h.DLQ_AGENT] == "worker"
    assert h.DUE_TS not in dead


def test_a_record_that_never_failed_has_no_attempts() -> None:
    fresh = _record("jobs", 1, 9, [])
    assert attempt_of(fresh.headers()) == 0
    assert first_failure_of(fresh.headers()) is None
    assert due_at_ms(fresh) is None


def test_failure_headers_on_a_source_topic_are_history_not_instructions() -> None:
    """A dead letter of another app, copied into a source topic, fails as a fresh record."""
    foreign = [
        ("user", b"u"),
        (h.ORIGINAL_TOPIC, b"ghost-topic"),
        (h.ORIGINAL_GROUP, b"other.app"),
        (h.ATTEMPT, b"3"),
        (h.FIRST_FAILURE_TS, b"1600000000000"),
        (h.DLQ_REASON, b"exhausted"),
    ]
    got = _values(
        dead_letter_headers(
            _record("items", 1, 5, foreign),
            retried=False,
            kind=ErrorKind.FATAL,
            error=_raised(BadInput("no")),
            attempt=1,
            group_id="s.worker",
            agent="worker",
        )
    )
    assert (got[h.ORIGINAL_TOPIC], got[h.ORIGINAL_GROUP]) == ("items", "s.worker")
    assert (got[h.ORIGINAL_PARTITION], got[h.ORIGINAL_OFFSET]) == ("1", "5")
    assert got[h.ATTEMPT] == "1"
    assert got[h.FIRST_FAILURE_TS] != "1600000000000"
    assert got[h.DLQ_REASON] == "fatal"
    assert got["user"] == "u"
    history = h.HISTORY_PREFIX
    assert got[f"{history}original.topic"] == "ghost-topic"
    assert got[f"{history}attempt"] == "3"
    assert got[f"{history}dlq.reason"] == "exhausted"


def test_message_and_stacktrace_are_bounded_on_character_boundaries() -> None:
    error = _raised(BadInput("é" * MAX_MESSAGE_BYTES))
    got = dead_letter_headers(
        _record("jobs", 0, 0, []),
        retried=False,
        kind=ErrorKind.FATAL,
        error=error,
        attempt=1,
        group_id="g",
        agent="a",
    )
    raw = dict(got)
    assert len(raw[h.EXCEPTION_MESSAGE]) <= MAX_MESSAGE_BYTES
    assert raw[h.EXCEPTION_MESSAGE].decode() == "é" * (MAX_MESSAGE_BYTES // 2)
    trace = raw[h.EXCEPTION_STACKTRACE]
    assert len(trace) <= MAX_STACKTRACE_BYTES
    assert trace.decode().endswith("\n")  # the tail, where the error is, is kept


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (ErrorKind.TRANSIENT, DeadLetterReason.EXHAUSTED),
        (ErrorKind.TIMEOUT, DeadLetterReason.EXHAUSTED),
        (ErrorKind.FATAL, DeadLetterReason.FATAL),
        (ErrorKind.DESERIALIZATION, DeadLetterReason.DESERIALIZATION),
    ],
)
def test_dead_letter_reason_follows_the_error_kind(
    kind: ErrorKind, reason: DeadLetterReason
) -> None:
    assert DeadLetterReason.of(kind) is reason


def test_a_record_past_its_deadline_keeps_its_error_kind() -> None:
    dead = _values(
        dead_letter_headers(
            _record("jobs", 0, 3, []),
            retried=False,
            kind=ErrorKind.TIMEOUT,
            error=_raised(TimeoutError()),
            attempt=4,
            group_id="g",
            agent="a",
            reason=DeadLetterReason.DEADLINE,
        )
    )
    assert (dead[h.DLQ_REASON], dead[h.ERROR_KIND]) == ("deadline", "timeout")
