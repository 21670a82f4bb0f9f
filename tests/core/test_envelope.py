"""The envelope headers: ids, chains, W3C trace context, tolerant parsing."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from mesh import envelope as envelope_module
from mesh.envelope import (
    CAUSATION_ID,
    CORRELATION_ID,
    EVENT_ID,
    EVENT_TYPE,
    PRODUCED_BY,
    TRACEPARENT,
    Envelope,
    new_event_id,
    record_event_id,
)

TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


def _uuid7_ms(value: str) -> int:
    return uuid.UUID(value).int >> 80


def test_event_ids_are_uuid7_unique_and_in_creation_order() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == ids[0]
    assert abs(_uuid7_ms(ids[-1]) - time.time_ns() // 1_000_000) < 5_000


def test_ids_stay_ordered_when_the_clock_stands_still_or_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = envelope_module._Uuid7()
    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(envelope_module.time, "time_ns", lambda: now[0])
    ids = [generator() for _ in range(5_000)]  # more than the 12-bit counter holds
    now[0] -= 10**9  # one second back
    ids += [generator() for _ in range(10)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert _uuid7_ms(ids[0]) == 1_800_000_000_000
    assert _uuid7_ms(ids[-1]) == 1_800_000_000_001  # borrowed the next millisecond


def test_a_new_chain_starts_its_own_correlation_and_trace() -> None:
    env = Envelope.new_chain("acme.TaskCreated", "planner")
    assert env.event_type == "acme.TaskCreated"
    assert env.produced_by == "planner"
    assert env.correlation_id == env.event_id
    assert env.causation_id is None
    assert TRACEPARENT_RE.fullmatch(env.traceparent)
    other = Envelope.new_chain("acme.TaskCreated", "planner")
    assert other.traceparent[3:35] != env.traceparent[3:35]


def test_a_chain_can_join_an_outside_correlation_id() -> None:
    env = Envelope.new_chain("acme.TaskCreated", "api", correlation_id="request-42")
    assert env.correlation_id == "request-42"
    assert env.event_id != "request-42"


def test_a_child_keeps_chain_and_trace_and_points_at_its_cause() -> None:
    parent = Envelope.new_chain("acme.TaskCreated", "api")
    child = parent.child("acme.PlanReady", "planner")
    grandchild = child.child("acme.Done", "worker")
    assert child.correlation_id == grandchild.correlation_id == parent.event_id
    assert child.causation_id == parent.event_id
    assert grandchild.causation_id == child.event_id
    assert parent.event_id < child.event_id < grandchild.event_id
    trace = TRACEPARENT_RE.fullmatch(parent.traceparent)
    child_trace = TRACEPARENT_RE.fullmatch(child.traceparent)
    assert trace is not None
    assert child_trace is not None
    assert child_trace.group(1) == trace.group(1)
    assert child_trace.group(2) != trace.group(2)
    assert (child.event_type, child.produced_by) == ("acme.PlanReady", "planner")


def test_a_child_keeps_the_parents_trace_flags() -> None:
    parent = Envelope.from_headers(
        [(TRACEPARENT, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]
    )
    child = parent.child("acme.Next", "agent")
    assert child.traceparent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert child.traceparent.endswith("-00")


def test_headers_round_trip() -> None:
    child = Envelope.new_chain("acme.TaskCreated", "api").child("acme.PlanReady", "planner")
    headers = child.to_headers()
    assert dict(headers) == {
        EVENT_ID: child.event_id.encode(),
        EVENT_TYPE: b"acme.PlanReady",
        CORRELATION_ID: child.correlation_id.encode(),
        CAUSATION_ID: child.causation_id.encode(),  # type: ignore[union-attr]
        TRACEPARENT: child.traceparent.encode(),
        PRODUCED_BY: b"planner",
    }
    assert Envelope.from_headers(headers) == child


def test_the_first_event_of_a_chain_has_no_causation_header() -> None:
    names = [name for name, _ in Envelope.new_chain("acme.A", "api").to_headers()]
    assert CAUSATION_ID not in names
    assert len(names) == 5


def test_extra_headers_follow_the_mesh_headers() -> None:
    env = Envelope.new_chain("acme.A", "api", headers=(("tenant", b"t1"),))
    child = env.child("acme.B", "agent", headers=(("x-retry", b"1"),))
    assert env.to_headers()[-1] == ("tenant", b"t1")
    assert child.to_headers()[-1] == ("x-retry", b"1")
    assert ("tenant", b"t1") not in child.to_headers()


@pytest.mark.parametrize("headers", [None, [], [("unrelated", b"x")]])
def test_a_foreign_record_gets_a_fresh_chain(headers: list[tuple[str, bytes]] | None) -> None:
    env = Envelope.from_headers(headers)
    assert uuid.UUID(env.event_id).version == 7
    assert env.correlation_id == env.event_id
    assert env.causation_id is None
    assert env.event_type == ""
    assert env.produced_by == ""
    assert TRACEPARENT_RE.fullmatch(env.traceparent)


def test_a_foreign_record_can_get_a_stable_id() -> None:
    fallback = record_event_id("orders", 2, 41)
    env = Envelope.from_headers([], fallback_event_id=fallback)
    assert env.event_id == env.correlation_id == fallback
    assert record_event_id("orders", 2, 41) == fallback
    assert record_event_id("orders", 2, 42) != fallback
    assert record_event_id("orders", 3, 41) != fallback
    headers = Envelope.new_chain("acme.A", "api").to_headers()
    assert Envelope.from_headers(headers, fallback_event_id=fallback).event_id != fallback


def test_parsing_never_fails_on_bad_values() -> None:
    env = Envelope.from_headers(
        [
            (EVENT_ID, None),
            (EVENT_TYPE, b"acme.\xff"),
            (CORRELATION_ID, b""),
            (CAUSATION_ID, None),
            (PRODUCED_BY, b"\xc3\xa9quipe"),
        ]
    )
    assert uuid.UUID(env.event_id).version == 7
    assert env.event_type == "acme.\ufffd"
    assert env.correlation_id == env.event_id
    assert env.causation_id is None
    assert env.produced_by == "équipe"


def test_the_last_of_repeated_headers_wins() -> None:
    env = Envelope.from_headers([(EVENT_TYPE, b"acme.Old"), (EVENT_TYPE, b"acme.New")])
    assert env.event_type == "acme.New"
    assert Envelope.event_type_of([(EVENT_TYPE, b"acme.Old"), (EVENT_TYPE, b"acme.New")]) == (
        "acme.New"
    )


VALID_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (VALID_TRACE, VALID_TRACE),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", VALID_TRACE),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", VALID_TRACE),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_traceparent_is_validated_and_normalised(raw: str, kept: str | None) -> None:
    env = Envelope.from_headers([(TRACEPARENT, raw.encode())])
    if kept is not None:
        assert env.traceparent == kept
    else:
        assert TRACEPARENT_RE.fullmatch(env.traceparent)
        assert env.traceparent[3:35] != raw[3:35]


def test_event_type_of_reads_only_that_header() -> None:
    headers = Envelope.new_chain("acme.TaskCreated", "api").to_headers()
    assert Envelope.event_type_of(headers) == "acme.TaskCreated"
    assert Envelope.event_type_of(None) is None
    assert Envelope.event_type_of([("other", b"x")]) is None


def test_envelopes_are_immutable() -> None:
    env = Envelope.new_chain("acme.A", "api")
    with pytest.raises(AttributeError):
        env.event_id = "x"  # type: ignore[misc]
