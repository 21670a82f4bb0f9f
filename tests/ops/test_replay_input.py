"""Replay and reset-group input: sources, times, filters, offset files (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Message

from mesh import headers
from mesh.errors import InputError
from mesh.ops.replay import RecordFilter, StartAt, StopAt, parse_source, parse_time_ms
from mesh.ops.reset import OffsetChange, ResetPlan, read_offsets_csv


def _msg(key: bytes | None = b"k", extra: list[tuple[str, bytes]] | None = None) -> Message:
    found = [
        (headers.EVENT_TYPE, b"acme.Order"),
        (headers.CORRELATION_ID, b"c1"),
        (headers.EXCEPTION_CLASS, b"mypkg.errors.BadInput"),
        (headers.DLQ_REASON, b"fatal"),
        ("tenant", b"a"),
        *(extra or []),
    ]
    return Message(topic="t", partition=0, offset=1, key=key, value=b"v", headers=found)


def test_sources() -> None:
    assert parse_source("orders") == ("orders", None)
    assert parse_source("orders:0,2") == ("orders", [0, 2])
    with pytest.raises(InputError, match="partitions are numbers"):
        parse_source("orders:x")


def test_times() -> None:
    assert parse_time_ms("1700000000000", option="--from-time") == 1_700_000_000_000
    assert parse_time_ms("2023-11-14T22:13:20Z", option="--from-time") == 1_700_000_000_000
    assert parse_time_ms("2023-11-14T23:13:20+01:00", option="--x") == 1_700_000_000_000
    with pytest.raises(InputError, match="has no zone"):
        parse_time_ms("2023-11-14T22:13:20", option="--from-time")
    with pytest.raises(InputError, match="ISO-8601"):
        parse_time_ms("yesterday", option="--from-time")


def test_one_start_and_one_end() -> None:
    with pytest.raises(InputError, match="give one start"):
        StartAt(beginning=True, offset=3)
    with pytest.raises(InputError, match="give one start"):
        StartAt(time_ms=1, group="g")
    with pytest.raises(InputError, match="give one end"):
        StopAt(offset=3, follow=True)
    assert StartAt(offset=0).offset == 0  # zero is an offset, not "unset"


@pytest.mark.parametrize(
    ("where", "matches"),
    [
        (RecordFilter(), True),
        (RecordFilter(key=b"k"), True),
        (RecordFilter(key=b"other"), False),
        (RecordFilter(headers=(("tenant", b"a"),)), True),
        (RecordFilter(headers=(("tenant", b"b"),)), False),
        (RecordFilter(headers=(("missing", b"a"),)), False),
        (RecordFilter(event_type="acme.Order", correlation_id="c1"), True),
        (RecordFilter(correlation_id="c2"), False),
        (RecordFilter(error_class="BadInput"), True),
        (RecordFilter(error_class="errors.BadInput"), True),
        (RecordFilter(error_class="mypkg.errors.BadInput"), True),
        (RecordFilter(error_class="Input"), False),  # a dotted tail, not a substring
        (RecordFilter(reason="fatal", error_class="BadInput"), True),
        (RecordFilter(reason="exhausted"), False),
    ],
)
def test_filter(where: RecordFilter, matches: bool) -> None:
    assert where.matches(_msg()) is matches


def test_filter_reads_the_last_value_of_a_repeated_header() -> None:
    msg = _msg(extra=[("tenant", b"b")])
    assert RecordFilter(headers=(("tenant", b"b"),)).matches(msg)
    assert not RecordFilter(headers=(("tenant", b"a"),)).matches(msg)
    assert not RecordFilter(key=b"k").matches(_msg(key=None))


def test_offsets_csv_round_trip(tmp_path: Path) -> None:
    plan = ResetPlan("g", "EMPTY", [OffsetChange("a", 0, 5, 3), OffsetChange("a", 1, None, 0)])
    assert plan.plan_csv() == "a,0,3\na,1,0\n"
    assert plan.before_csv() == "a,0,5\n"  # a[1] had no committed offset to go back to
    assert plan.uncommitted == ["a[1]"]
    assert not plan.active
    path = tmp_path / "offsets.csv"
    path.write_text(plan.plan_csv())
    assert read_offsets_csv(path) == {("a", 0): 3, ("a", 1): 0}
    path.write_text("a,0\n")
    with pytest.raises(InputError, match="line 1: expected topic,partition,offset"):
        read_offsets_csv(path)
    with pytest.raises(InputError, match="No such file"):
        read_offsets_csv(tmp_path / "missing.csv")
    assert ResetPlan("g", "STABLE").active
