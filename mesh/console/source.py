"""What the console reads from Kafka: agents, their topics, counts, lag and records.

Every function here blocks on the broker and is called from a worker thread (see
``app``). Counts and lag come from one round of group offsets and watermarks for every
partition involved (:class:`Sampler`); records are read by assignment through
:class:`~mesh.kafka.reader.Tail`, never by joining a group, so the agents never see the
console.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.errors import InputError
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import TP, offsets_for_times, watermarks
from mesh.kafka.reader import Tail, TailRecord
from mesh.kafka.topics import existing_topics
from mesh.ops.dlq import DeadLetter
from mesh.runtime.app import Mesh
from mesh.runtime.topology import dead_letter_topic
from mesh.serde import Serde

__all__ = [
    "AgentInfo",
    "AgentSample",
    "Sampler",
    "app_agents",
    "cluster_agents",
    "latest_failures",
    "read_record",
    "tail_starts",
    "topic_sizes",
]

#: How long dead letters or lag that grew keep an agent's row red.
ALERT_WINDOW_S = 300.0


@dataclass(frozen=True)
class AgentInfo:
    """An agent as the console knows it: its group and topics, its settings if known."""

    name: str
    group_id: str
    sources: tuple[str, ...]
    retry_topics: tuple[str, ...]
    dead_letter_topics: tuple[str, ...]
    described: dict[str, Any] | None = None  # Mesh.describe()'s entry; None from the cluster

    @property
    def topics(self) -> tuple[str, ...]:
        return self.sources + self.retry_topics + self.dead_letter_topics


def app_agents(app: Mesh) -> list[AgentInfo]:
    """The agents of *app*, with the effective settings :meth:`Mesh.describe` gives."""
    described = app.describe()
    return [
        AgentInfo(
            name=name,
            group_id=described[name]["group_id"],
            sources=tuple(dict.fromkeys(t.topic() for t in spec.consumes)),
            retry_topics=tuple(described[name]["retry_topics"]),
            dead_letter_topics=tuple(described[name]["dead_letter_topics"]),
            described=described[name],
        )
        for name, spec in app.agents.items()
    ]


def cluster_agents(settings: Settings) -> list[AgentInfo]:
    """Without an app: the agents that mesh's topic names reveal, named by their group.

    A dead-letter topic ``{source}.{group}.dlq`` next to an existing ``{source}`` (the
    longest such prefix) names a group and what it consumes. Topic names are read rather
    than the broker's group list, which the embedded broker leaves incomplete.
    """
    topics = existing_topics(AdminClient(admin_config(settings)))
    sources: dict[str, list[str]] = {}
    for name in sorted(topics):
        if not name.endswith(".dlq"):
            continue
        parts = name.removesuffix(".dlq").split(".")
        prefixes = (".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1))
        source = next((p for p in prefixes if p in topics), None)
        if source is not None:
            group = name.removesuffix(".dlq")[len(source) + 1 :]
            sources.setdefault(group, []).append(source)
    return [
        AgentInfo(
            name=group,
            group_id=group,
            sources=tuple(consumed),
            retry_topics=tuple(
                t for t in sorted(topics) for s in consumed if t.startswith(f"{s}.{group}.retry.")
            ),
            dead_letter_topics=tuple(dead_letter_topic(s, group) for s in consumed),
        )
        for group, consumed in sorted(sources.items())
    ]


@dataclass(frozen=True)
class AgentSample:
    """One agent's counts at one moment, from group offsets and watermarks."""

    at: float  # time.monotonic()
    lag: dict[TP, int]  # source partitions: end - committed
    retries_waiting: int  # records in retry topics the group has not committed past
    dead_letters: int  # records held by its dead-letter topics
    records: dict[str, int] = field(default_factory=dict)  # topic -> records held


class Sampler:
    """Rounds of counts for a set of agents, and whether each looks in trouble.

    One round is one ``ListConsumerGroupOffsets`` per group and one watermark request
    for every partition of every agent's topics. A short history (:data:`ALERT_WINDOW_S`)
    tells whether dead letters arrived or lag kept growing: that turns a row red. Not
    thread-safe: the console calls it from one thread at a time.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = AdminClient(admin_config(settings))
        self._probe: Consumer | None = None
        self.history: dict[str, deque[AgentSample]] = {}

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def sample(self, agents: Sequence[AgentInfo]) -> dict[str, AgentSample]:
        sizes = existing_topics(self._admin)
        committed: dict[str, dict[TP, int]] = {}
        for agent in agents:
            wanted = [
                TopicPartition(t, p)
                for t in agent.sources + agent.retry_topics
                if t in sizes
                for p in range(sizes[t])
            ]
            if not wanted:
                committed[agent.name] = {}
                continue
            request = ConsumerGroupTopicPartitions(agent.group_id, wanted)
            answer = self._admin.list_consumer_group_offsets([request])[agent.group_id].result(10)
            committed[agent.name] = {
                (tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions
            }
        every = [
            (t, p) for agent in agents for t in agent.topics if t in sizes for p in range(sizes[t])
        ]
        if self._probe is None:
            self._probe = Consumer(reader_config(self._settings, "console"))
        lows, ends = watermarks(self._settings, self._probe, every, timeout_s=10)
        self._probe.unassign()  # the probe may be left assigned: stop it fetching meanwhile
        now = time.monotonic()
        samples = {}
        for agent in agents:
            held = {tp: ends[tp] - lows[tp] for tp in every if tp[0] in agent.topics}
            behind = {
                tp: max(0, ends[tp] - (offset if offset >= 0 else lows[tp]))
                for tp, offset in committed[agent.name].items()
            }
            records: dict[str, int] = {}
            for (topic, _), count in held.items():
                records[topic] = records.get(topic, 0) + count
            sample = AgentSample(
                at=now,
                lag={tp: n for tp, n in behind.items() if tp[0] in agent.sources},
                retries_waiting=sum(n for tp, n in behind.items() if tp[0] in agent.retry_topics),
                dead_letters=sum(records.get(t, 0) for t in agent.dead_letter_topics),
                records=records,
            )
            history = self.history.setdefault(agent.name, deque())
            history.append(sample)
            while history and now - history[0].at > ALERT_WINDOW_S:
                history.popleft()
            samples[agent.name] = sample
        return samples

    def alerts(self, agent: str) -> list[str]:
        """Why *agent*'s row is red: dead letters arrived, or lag grew three rounds running."""
        history = list(self.history.get(agent, ()))
        if not history:
            return []
        found = []
        arrived = history[-1].dead_letters - history[0].dead_letters
        if arrived > 0:
            found.append(f"{arrived} new dead letter(s)")
        totals = [sum(s.lag.values()) for s in history[-3:]]
        if len(totals) == 3 and totals[0] < totals[1] < totals[2]:
            found.append("lag growing")
        return found


def topic_sizes(settings: Settings) -> dict[str, tuple[int, int]]:
    """Topic -> (partitions, records held), every topic of the cluster."""
    sizes = existing_topics(AdminClient(admin_config(settings)))
    tps = [(t, p) for t, n in sizes.items() for p in range(n)]
    lows, ends = _watermarks(settings, tps)
    held: dict[str, int] = dict.fromkeys(sizes, 0)
    for tp in tps:
        held[tp[0]] += ends[tp] - lows[tp]
    return {t: (sizes[t], held[t]) for t in sorted(sizes)}


def latest_failures(settings: Settings, topics: Iterable[str], count: int = 10) -> list[DeadLetter]:
    """The *count* latest records of retry and dead-letter *topics*, newest first: each
    carries the failure's exception class and message in its headers."""
    sizes = existing_topics(AdminClient(admin_config(settings)))
    tps = [(t, p) for t in topics if t in sizes for p in range(sizes[t])]
    lows, ends = _watermarks(settings, tps)
    found: list[DeadLetter] = []
    for topic in dict.fromkeys(t for t, _ in tps):
        parts = [p for t, p in tps if t == topic and ends[t, p] > lows[t, p]]
        if not parts:
            continue
        starts = {p: max(lows[topic, p], ends[topic, p] - count) for p in parts}
        with Tail(settings, topic, starts=starts, ends={p: ends[topic, p] for p in parts}) as tail:
            found.extend(DeadLetter.from_message(m) for m in tail.messages())
    found.sort(key=lambda letter: letter.timestamp_ms or 0, reverse=True)
    return found[:count]


def read_record(
    settings: Settings, serde: Serde, topic: str, partition: int, offset: int
) -> TailRecord:
    """The record at *offset* of *topic*[*partition*], its value decoded."""
    with Tail(
        settings, topic, partitions=[partition], from_offset=offset, to_end=True, serde=serde
    ) as tail:
        for record in tail.records(count=1):
            if record.offset == offset:
                return record
    raise InputError(f"{topic}[{partition}] has no record at offset {offset}")


def tail_starts(
    settings: Settings,
    topic: str,
    *,
    offset: int | None = None,
    at_ms: int | None = None,
    last: int = 20,
) -> dict[int, int]:
    """Where to start reading each partition of *topic*: *offset*, the first record at or
    after *at_ms*, or else the *last* records before the end."""
    sizes = existing_topics(AdminClient(admin_config(settings)))
    if topic not in sizes:
        raise InputError(f"topic {topic!r} does not exist")
    tps = [(topic, p) for p in range(sizes[topic])]
    probe = Consumer(reader_config(settings, "console", **{"auto.offset.reset": "earliest"}))
    try:
        lows, ends = watermarks(settings, probe, tps, timeout_s=10)
        if at_ms is not None:
            found = offsets_for_times(probe, dict.fromkeys(tps, at_ms), ends, timeout_s=10)
            return {p: found[topic, p] for _, p in tps}
    finally:
        probe.close()
    if offset is not None:
        return {p: min(max(offset, lows[topic, p]), ends[topic, p]) for _, p in tps}
    return {p: max(lows[topic, p], ends[topic, p] - last) for _, p in tps}


def _watermarks(settings: Settings, tps: list[TP]) -> tuple[dict[TP, int], dict[TP, int]]:
    probe = Consumer(reader_config(settings, "console"))
    try:
        return watermarks(settings, probe, tps, timeout_s=10)
    finally:
        probe.close()
