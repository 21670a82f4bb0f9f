"""Workarounds for Kafka-compatible brokers that deviate from Apache Kafka (Tansu).

Every function here gives the Kafka answer on Apache Kafka too, so nothing changes on a
real cluster; only the route to the answer avoids what a deviating broker gets wrong.
Deviations worked around:

- **Tansu does not wake a waiting fetch when data arrives**: end-to-end latency is about
  ``fetch.wait.max.ms`` (p50 124 ms at Kafka's 500 ms default). :func:`tuning` shortens
  the wait for each client profile, and only when :func:`is_tansu`: on Kafka a short
  wait would cost every broker about 20 fetches a second per idle consumer.

- **ListOffsets "latest" is wrong on Tansu**: it returns the base offset of the newest
  batch + 1 (after one batch of 100 records the "end" is 1), so ``OFFSET_END``,
  ``auto.offset.reset=latest`` and uncached ``get_watermark_offsets`` start too early.
  :func:`end_offsets` reads the high watermark from a fetch response instead, and only
  on Tansu: on Kafka it asks ``AdminClient.list_offsets`` once for every partition,
  since a fetch probe per partition every few seconds in every process is a real load.

- **offsets_for_times is wrong on Tansu**: it answers with the broker's append time at
  batch granularity (ignoring the records' CreateTime), and a time after the last record
  gives offset 0 instead of the end. :func:`offsets_for_times` takes the broker's answer
  as a hint and checks it against the records' own timestamps, reading forward from it.

Related rules kept elsewhere: never ask metadata for one topic by name, Tansu creates it
(:func:`mesh.kafka.topics.existing_topics` lists all topics instead).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from mesh.config import Settings
from mesh.errors import BrokerError
from mesh.kafka.properties import applicable

__all__ = [
    "TP",
    "end_offsets",
    "high_watermarks",
    "is_tansu",
    "offsets_for_times",
    "tuning",
    "watermarks",
]

_KAFKA_LOG = logging.getLogger("mesh.kafka")

Profile = Literal["agent", "reader", "registry"]

#: fetch.wait.max.ms by client profile on Tansu: an agent's latency per hop (and a retry's
#: lateness), a reader's wait at the end of its data, the registry's write round trip.
_TANSU_TUNING: dict[str, dict[str, Any]] = {
    "agent": {"fetch.wait.max.ms": 50},
    "reader": {"fetch.wait.max.ms": 100},
    "registry": {"fetch.wait.max.ms": 20},
}

#: (topic, partition)
TP = tuple[str, int]

_UNKNOWN = 0  # cached watermarks are negative (OFFSET_INVALID) until a fetch answered


def tuning(settings: Settings, profile: Profile) -> dict[str, Any]:
    """Client properties that make *profile* usable on Tansu; nothing on any other broker."""
    return dict(_TANSU_TUNING[profile]) if is_tansu(settings) else {}


def is_tansu(settings: Settings) -> bool:
    """Whether the cluster is Tansu: the ``broker`` setting, or asked once if ``auto``."""
    if settings.broker != "auto":
        return settings.broker == "tansu"
    return _cluster_is_tansu(settings.bootstrap_servers, _admin_properties(settings))


@functools.lru_cache(maxsize=8)
def _cluster_is_tansu(bootstrap: str, properties: tuple[tuple[str, Any], ...]) -> bool:
    # All topics, never one by name: Tansu creates a topic it is asked about.
    admin = _admin(bootstrap, properties)
    try:
        cluster_id = admin.list_topics(timeout=5).cluster_id or ""
    except KafkaException:  # unreachable: Kafka's defaults are right on any broker
        return False
    return cluster_id.startswith("tansu")


def high_watermarks(
    settings: Settings,
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout_s: float = 10.0,
) -> dict[int, int]:
    """Partition -> high watermark of one topic; see :func:`end_offsets`."""
    tps = [(topic, p) for p in partitions]
    ends = end_offsets(settings, consumer, tps, timeout_s=timeout_s)
    return {p: end for (_, p), end in ends.items()}


def end_offsets(
    settings: Settings, consumer: Consumer, partitions: Iterable[TP], *, timeout_s: float = 10.0
) -> dict[TP, int]:
    """(topic, partition) -> high watermark (the offset the next record will get).

    On Kafka, one batched ListOffsets (``AdminClient.list_offsets``); *consumer* is not
    used. On Tansu, from a fetch (:func:`_fetched_ends`), which leaves *consumer*
    assigned to the probed positions: reassign it before reading.
    """
    parts = list(dict.fromkeys(partitions))
    if not parts:
        return {}
    if is_tansu(settings):
        return _fetched_ends(consumer, parts, timeout_s=timeout_s)
    return _listed(settings, parts, OffsetSpec.latest(), timeout_s=timeout_s)


def watermarks(
    settings: Settings, consumer: Consumer, partitions: Iterable[TP], *, timeout_s: float = 10.0
) -> tuple[dict[TP, int], dict[TP, int]]:
    """Low and high watermarks of *partitions*; see :func:`end_offsets`.

    On Tansu the low ones are those the fetch probe cached; on Kafka, a second batched
    ListOffsets (earliest). Like :func:`end_offsets`, may leave *consumer* assigned.
    """
    parts = list(dict.fromkeys(partitions))
    highs = end_offsets(settings, consumer, parts, timeout_s=timeout_s)
    if not parts or is_tansu(settings):
        lows = {
            tp: max(consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)[0], 0)
            for tp in parts
        }
    else:
        lows = _listed(settings, parts, OffsetSpec.earliest(), timeout_s=timeout_s)
    return lows, highs


def _listed(
    settings: Settings, parts: list[TP], spec: OffsetSpec, *, timeout_s: float
) -> dict[TP, int]:
    """One ListOffsets request for every partition of *parts*."""
    admin = _admin(settings.bootstrap_servers, _admin_properties(settings))
    query = {TopicPartition(*tp): spec for tp in parts}
    try:
        futures = admin.list_offsets(query, request_timeout=timeout_s)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
    except Exception as exc:  # KafkaException: broker gone, timed out, unknown partition
        raise BrokerError(f"cannot read the offsets of {parts[0][0]}: {exc}") from None


def _admin_properties(settings: Settings) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(applicable(settings.kafka, "admin").items()))


@functools.lru_cache(maxsize=8)
def _admin(bootstrap: str, properties: tuple[tuple[str, Any], ...]) -> AdminClient:
    """One admin client per cluster and process: the lag metric asks every 10 s."""
    return AdminClient({"bootstrap.servers": bootstrap, "logger": _KAFKA_LOG, **dict(properties)})


def _fetched_ends(consumer: Consumer, parts: list[TP], *, timeout_s: float) -> dict[TP, int]:
    """High watermarks read from a fetch response, where ListOffsets is wrong (Tansu).

    Assigns each partition one record before the reported end (or at 0), consumes once
    so the broker answers a fetch, and takes the watermark that fetch carried: a fetch
    response holds the true high watermark even where ListOffsets does not. The larger
    of the two answers wins, so a correct ListOffsets is never made worse. Leaves
    *consumer* assigned to the probed positions. The low watermark is then cached too
    (``get_watermark_offsets(cached=True)``).
    """
    reported: dict[TP, int] = {}
    for tp in parts:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)
        except Exception as exc:  # KafkaException: broker gone or timed out
            raise BrokerError(f"cannot read the end offsets of {tp[0]}: {exc}") from None
        reported[tp] = high
    _assign(consumer, [TopicPartition(t, p, max(reported[t, p] - 1, 0)) for t, p in parts])
    found: dict[TP, int] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(parts):
        if time.monotonic() > deadline:
            missing = ", ".join(f"{t}[{p}]" for t, p in parts if (t, p) not in found)
            raise BrokerError(f"no fetch answer from {missing}")
        consumer.consume(1000, timeout=0.05)  # the records are dropped: only the answer counts
        for tp in parts:
            if tp not in found:
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                if high >= _UNKNOWN:
                    found[tp] = max(high, reported[tp])
    return found


def offsets_for_times(
    consumer: Consumer,
    times_ms: dict[TP, int],
    ends: dict[TP, int],
    *,
    timeout_s: float = 10.0,
) -> dict[TP, int]:
    """(topic, partition) -> the first offset whose record timestamp is >= the time given.

    Kafka's answer (``offsets_for_times``), with *ends* (from :func:`end_offsets`) where
    no record is that recent. The broker's answer is a hint, checked by reading from one
    record before it: on Kafka the record at the hint is the first at or after the time
    and the one before is older, so two records are read. Otherwise (Tansu) the records
    are read forward from the hint until one is recent enough; if even the record before
    the hint is recent enough, the partition is read again from its start. *consumer*
    needs ``auto.offset.reset=earliest`` (the record before the hint may be trimmed);
    it is left assigned: reassign before reading.
    """
    query = [TopicPartition(t, p, ts) for (t, p), ts in times_ms.items()]
    try:
        answers = consumer.offsets_for_times(query, timeout=timeout_s) if query else []
    except Exception as exc:  # KafkaException: broker gone or timed out
        raise BrokerError(f"cannot look up offsets by time: {exc}") from None
    hints = {}
    for answer in answers:
        tp = (answer.topic, answer.partition)
        hints[tp] = answer.offset if 0 <= answer.offset < ends[tp] else ends[tp]
    found, overshot = _first_at_or_after(
        consumer,
        {tp: max(hint - 1, 0) for tp, hint in hints.items()},
        hints=hints,
        ends=ends,
        times_ms=times_ms,
        timeout_s=timeout_s,
    )
    if overshot:  # an older record was already recent enough: the hint was too late
        again, _ = _first_at_or_after(
            consumer,
            dict.fromkeys(overshot, OFFSET_BEGINNING),
            hints=dict.fromkeys(overshot, 0),
            ends=ends,
            times_ms=times_ms,
            timeout_s=timeout_s,
        )
        found.update(again)
    return found


def _first_at_or_after(
    consumer: Consumer,
    starts: dict[TP, int],
    *,
    hints: dict[TP, int],
    ends: dict[TP, int],
    times_ms: dict[TP, int],
    timeout_s: float,
) -> tuple[dict[TP, int], list[TP]]:
    """Per partition, the first offset from its start whose timestamp is recent enough (or
    its end); and the partitions where that record lies before the hint."""
    found = {tp: ends[tp] for tp, start in starts.items() if start >= ends[tp]}
    overshot: list[TP] = []
    pending = {tp: start for tp, start in starts.items() if tp not in found}
    _assign(consumer, [TopicPartition(t, p, start) for (t, p), start in pending.items()])
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise BrokerError(f"reading {', '.join(f'{t}[{p}]' for t, p in pending)} timed out")
        for msg in consumer.consume(1000, timeout=0.05):
            tp = (msg.topic() or "", msg.partition() or 0)
            if msg.error() is not None or tp not in pending:
                continue
            offset = msg.offset() or 0
            if offset >= ends[tp] or _timestamp_ms(msg) >= times_ms[tp]:
                found[tp] = min(offset, ends[tp])
                if offset < hints[tp]:
                    overshot.append(tp)
                del pending[tp]
                consumer.pause([TopicPartition(*tp)])
        for position in consumer.position([TopicPartition(t, p) for t, p in pending]):
            tp = (position.topic, position.partition)
            if position.offset >= ends[tp]:  # read to the end (past trailing control records)
                found[tp] = ends[tp]
                del pending[tp]
    return found, overshot


def _assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Assign *partitions*, unpaused: librdkafka keeps a pause across re-assignments."""
    consumer.assign(partitions)
    if partitions:
        consumer.resume(partitions)


def _timestamp_ms(msg: Message) -> int:
    _, ts = msg.timestamp()
    return ts
