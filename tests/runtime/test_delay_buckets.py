"""Delay buckets and the headers of a delayed record (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Message

from mesh import headers as h
from mesh.runtime.delay import (
    BUCKETS_MS,
    bucket_for,
    delay_dead_letter_topic,
    delay_group,
    delay_topic,
    delayed_record,
    deliver_at_ms,
    due_in_ms,
    leaves_at_ms,
    target_of,
)


@pytest.mark.parametrize(
    ("left_ms", "bucket_ms"),
    [(1, 100), (100, 100), (249, 100), (30_000, 30_000), (31_000, 30_000), (10**10, 86_400_000)],
)
def test_a_record_waits_in_the_largest_bucket_that_fits(left_ms: int, bucket_ms: int) -> None:
    assert bucket_for(left_ms) == bucket_ms


def test_bucket_topics_are_named_by_their_namespace_and_delay() -> None:
    assert [delay_topic(b, "shop") for b in BUCKETS_MS[:4]] == [
        "mesh.delay.shop.100ms",
        "mesh.delay.shop.250ms",
        "mesh.delay.shop.500ms",
        "mesh.delay.shop.1s",
    ]
    assert delay_topic(BUCKETS_MS[-1], "shop") == "mesh.delay.shop.24h"
    assert delay_group("shop") == "mesh.delay.shop"
    assert delay_dead_letter_topic("shop") == "mesh.delay.shop.dlq"


def test_a_delayed_record_carries_its_target_and_due_time() -> None:
    own = [(h.EVENT_ID, b"e1")]
    topic, headers = delayed_record(
        "jobs", own, 1_000_035_000, namespace="shop", now_ms=1_000_000_000
    )
    assert topic == "mesh.delay.shop.30s"
    assert headers == [*own, (h.DELAY_TARGET, b"jobs"), (h.DUE_TS, b"1000035000")]
    assert delayed_record("jobs", own, 999, namespace="shop", now_ms=1000) == ("jobs", own)


def test_a_record_leaves_its_bucket_after_the_bucket_length_or_when_due() -> None:
    def record(topic: str, written_ms: int, due_ms: int) -> Message:
        return Message(
            topic=topic,
            headers=[(h.DELAY_TARGET, b"jobs"), (h.DUE_TS, str(due_ms).encode())],
            timestamp=(1, written_ms),
        )

    assert leaves_at_ms(record("mesh.delay.shop.30s", 1_000, 95_000)) == 31_000
    assert leaves_at_ms(record("mesh.delay.a.b.100ms", 1_000, 1_040)) == 1_040
    assert target_of(record("mesh.delay.shop.1s", 0, 0)) == "jobs"


def test_deliver_at_and_delay_become_epoch_ms() -> None:
    at = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert deliver_at_ms(at) == 1_795_683_600_000
    assert deliver_at_ms(1_795_683_600_000) == 1_795_683_600_000
    with pytest.raises(ValueError, match="timezone"):
        deliver_at_ms(datetime(2026, 11, 26, 9, 0))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert 0 <= due_in_ms("30s") - now_ms - 30_000 < 1000
    assert 0 <= due_in_ms(timedelta(minutes=1)) - now_ms - 60_000 < 1000
