"""Moving a consumer group's committed offsets (``mesh replay reset-group``).

The rules are those of Kafka's ``kafka-consumer-groups --reset-offsets``: a target
outside a partition's range ``[low, high]`` is clamped to it with a warning; shifting a
partition without a committed offset is an error; a time after the last record resolves
to the end. Offsets are only moved while the group is inactive: Kafka refuses commits
from outside an active group anyway, and its members would overwrite them.

The group's state decides "active" (anything but Empty or Dead): Tansu reports the
state correctly but never lists the members.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.errors import BrokerError, InputError
from mesh.kafka.clients import admin_config
from mesh.kafka.compat import TP, offsets_for_times, watermarks
from mesh.kafka.reader import topic_partitions
from mesh.kafka.topics import existing_topics
from mesh.ops.replay import group_offsets, probe_consumer

__all__ = [
    "OffsetChange",
    "ResetPlan",
    "ResetTo",
    "apply_reset",
    "group_state",
    "plan_reset",
    "read_offsets_csv",
]

Strategy = Literal["earliest", "latest", "offset", "shift", "time", "file"]
_INACTIVE = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD}


@dataclass(frozen=True)
class ResetTo:
    """The target, as one of Kafka's reset specs; ``value`` is an offset, a shift, epoch ms,
    or the offsets read from a file."""

    strategy: Strategy
    value: int | dict[TP, int] | None = None


@dataclass(frozen=True)
class OffsetChange:
    topic: str
    partition: int
    current: int | None  # None: the group has no committed offset there
    new: int

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "current": self.current,
            "new": self.new,
        }


@dataclass
class ResetPlan:
    group: str
    state: str
    changes: list[OffsetChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """The group has members: its offsets cannot be moved now."""
        return self.state not in {s.name for s in _INACTIVE}

    def before_csv(self) -> str:
        """The committed offsets the reset replaces, ``topic,partition,offset`` per line:
        ``--from-file`` with them undoes it. A partition without one is left out (see
        :attr:`uncommitted`): there is no offset to go back to."""
        committed = [c for c in self.changes if c.current is not None]
        return _csv((c.topic, c.partition, c.current) for c in committed)

    def plan_csv(self) -> str:
        """The new offsets, as ``kafka-consumer-groups --reset-offsets --export`` writes them."""
        return _csv((c.topic, c.partition, c.new) for c in self.changes)

    @property
    def uncommitted(self) -> list[str]:
        """``topic[partition]`` of each partition where the group has no committed offset."""
        return [f"{c.topic}[{c.partition}]" for c in self.changes if c.current is None]

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "active": self.active,
            "changes": [c.to_json() for c in self.changes],
            "warnings": self.warnings,
        }


def _csv(rows: Iterable[tuple[str, int, int]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def group_state(admin: AdminClient, group: str, *, timeout_s: float = 10.0) -> ConsumerGroupState:
    try:
        (future,) = admin.describe_consumer_groups([group], request_timeout=timeout_s).values()
        return future.result().state
    except Exception as exc:  # KafkaException: broker gone or timed out
        raise BrokerError(f"cannot describe group {group!r}: {exc}") from None


def read_offsets_csv(path: Path) -> dict[TP, int]:
    """``topic,partition,offset`` per line (as ``--export`` writes) -> offsets."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"--from-file {path}: {exc.strerror}") from None
    found: dict[TP, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row:
            continue
        try:
            topic, partition, offset = row
            found[topic, int(partition)] = int(offset)
        except ValueError:
            raise InputError(
                f"--from-file {path} line {number}: expected topic,partition,offset"
            ) from None
    if not found:
        raise InputError(f"--from-file {path} has no offsets")
    return found


def plan_reset(
    settings: Settings,
    group: str,
    to: ResetTo,
    *,
    topics: Iterable[tuple[str, list[int] | None]] = (),
    timeout_s: float = 10.0,
) -> ResetPlan:
    """Current and new offset per partition, as Kafka's tool would compute them.

    *topics* names (topic, partitions or None for all); by default the topics the group
    has committed offsets on (``--all-topics``), or those in the file.
    """
    admin = AdminClient(admin_config(settings))
    plan = ResetPlan(group, group_state(admin, group, timeout_s=timeout_s).name)
    tps = _partitions(settings, admin, group, to, topics=list(topics), timeout_s=timeout_s)
    current = group_offsets(settings, group, tps, timeout_s=timeout_s)
    consumer = probe_consumer(settings)
    try:
        lows, highs = watermarks(settings, consumer, tps, timeout_s=timeout_s)
        wanted = _targets(
            consumer, to, tps, current=current, lows=lows, highs=highs, timeout_s=timeout_s
        )
    finally:
        consumer.close()
    for tp in tps:
        target = wanted[tp]
        new = min(max(target, lows[tp]), highs[tp])
        if new != target:
            edge = "earliest" if target < lows[tp] else "latest"
            plan.warnings.append(
                f"{tp[0]}[{tp[1]}]: offset {target} is past the {edge} offset; set to {new}"
            )
        plan.changes.append(OffsetChange(tp[0], tp[1], current.get(tp), new))
    return plan


def _partitions(
    settings: Settings,
    admin: AdminClient,
    group: str,
    to: ResetTo,
    *,
    topics: list[tuple[str, list[int] | None]],
    timeout_s: float,
) -> list[TP]:
    if isinstance(to.value, dict):  # from a file: its partitions, checked to exist
        sizes = existing_topics(admin, timeout_s=timeout_s)
        for topic, partition in to.value:
            if not 0 <= partition < sizes.get(topic, 0):
                raise InputError(f"the file names {topic}[{partition}], which does not exist")
        return sorted(to.value)
    if topics:
        return [
            (topic, p)
            for topic, parts in topics
            for p in topic_partitions(settings, topic, parts, timeout_s=timeout_s)
        ]
    request = ConsumerGroupTopicPartitions(group)
    try:
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=timeout_s).values()
        committed = future.result().topic_partitions
    except Exception as exc:
        raise BrokerError(f"cannot read the offsets of group {group!r}: {exc}") from None
    found = sorted({(tp.topic, tp.partition) for tp in committed or ()})
    if not found:
        raise InputError(f"group {group!r} has no committed offsets: name the topics (--topic)")
    return found


def _targets(
    consumer: Consumer,
    to: ResetTo,
    tps: list[TP],
    *,
    current: dict[TP, int],
    lows: dict[TP, int],
    highs: dict[TP, int],
    timeout_s: float,
) -> dict[TP, int]:
    value = to.value
    if to.strategy == "earliest":
        return dict(lows)
    if to.strategy == "latest":
        return dict(highs)
    if isinstance(value, dict):
        return {tp: value[tp] for tp in tps}
    assert value is not None
    if to.strategy == "offset":
        return dict.fromkeys(tps, value)
    if to.strategy == "shift":
        missing = [f"{t}[{p}]" for t, p in tps if (t, p) not in current]
        if missing:
            raise InputError(
                f"cannot shift {', '.join(missing)}: the group has no committed offset there"
            )
        return {tp: current[tp] + value for tp in tps}
    return offsets_for_times(consumer, dict.fromkeys(tps, value), highs, timeout_s=timeout_s)


def apply_reset(settings: Settings, plan: ResetPlan, *, timeout_s: float = 10.0) -> None:
    """Commit *plan*'s new offsets for its group; refuses while the group is active."""
    admin = AdminClient(admin_config(settings))
    state = group_state(admin, plan.group, timeout_s=timeout_s)
    if state not in _INACTIVE:
        raise InputError(
            f"group {plan.group!r} is {state.name.lower()}: stop its consumers before moving "
            "its offsets"
        )
    request = ConsumerGroupTopicPartitions(
        plan.group, [TopicPartition(c.topic, c.partition, c.new) for c in plan.changes]
    )
    try:
        (future,) = admin.alter_consumer_group_offsets(
            [request], request_timeout=timeout_s
        ).values()
        answer = future.result()
    except Exception as exc:
        raise BrokerError(f"cannot move the offsets of group {plan.group!r}: {exc}") from None
    refused = [
        f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in answer.topic_partitions if tp.error
    ]
    if refused:
        raise BrokerError(f"the broker refused: {'; '.join(refused)}")
