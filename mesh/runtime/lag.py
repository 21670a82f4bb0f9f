"""Consumer lag of an app's groups, read from the broker by a thread of its own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client.core import GaugeMetricFamily, Metric

from mesh.config import Settings
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import watermarks
from mesh.kafka.topics import existing_topics

__all__ = ["ConsumerLag"]

log = logging.getLogger(__name__)


class ConsumerLag:
    """``mesh_consumer_lag``: end offset minus committed offset, per partition of each group.

    Read every *interval_s* by a thread with clients of its own (the workers' consumers
    belong to their poll threads) and served from memory, so a scrape never waits on the
    broker. Watermarks come from :func:`~mesh.kafka.compat.watermarks`: one batched
    ListOffsets on Kafka, a fetch on Tansu (whose ListOffsets is wrong). Every process
    running an agent reports the whole group: aggregate with ``max by (agent, topic, partition)``.
    """

    def __init__(
        self,
        settings: Settings,
        groups: Mapping[str, tuple[str, Sequence[str]]],
        *,
        interval_s: float = 10.0,
        on_spare: Callable[[str, bool], None] | None = None,
    ) -> None:
        """*groups*: agent -> (consumer group id, topics it consumes, retry topics included).

        *on_spare* is told, each round, whether an agent's group is stable with more
        members than partitions (a member without partitions is then a spare, not lost).
        """
        self._settings = settings
        self._groups = groups
        self._on_spare = on_spare
        self._interval_s = interval_s
        self._lag: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mesh_consumer_lag",
            "Records not yet committed by the agent's consumer group (end - committed).",
            labels=["agent", "topic", "partition"],
        )
        for (agent, topic, partition), lag in sorted(self._lag.items()):
            family.add_metric([agent, topic, str(partition)], lag)
        yield family

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mesh-lag", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 15)

    def _run(self) -> None:
        admin = AdminClient(admin_config(self._settings))
        while not self._stop.is_set():
            try:
                self._lag = self._read(admin)
            except Exception as exc:  # the broker is away: keep the last answer
                log.warning("consumer lag not refreshed: %s", exc)
            self._stop.wait(self._interval_s)

    def _read(self, admin: AdminClient) -> dict[tuple[str, str, int], int]:
        """One round: the lag of every partition of every group, read from the broker."""
        sizes = existing_topics(admin)
        committed: dict[str, list[TopicPartition]] = {}
        for agent, (group_id, topics) in self._groups.items():
            wanted = [TopicPartition(t, p) for t in topics if t in sizes for p in range(sizes[t])]
            if wanted:
                request = ConsumerGroupTopicPartitions(group_id, wanted)
                answer = admin.list_consumer_group_offsets([request])[group_id].result(10)
                committed[agent] = answer.topic_partitions
        if self._on_spare is not None:
            self._report_spares(admin, sizes)
        every = {(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
        # A probe per round: watermarks() leaves it assigned, and on Tansu a kept one
        # fetched every partition ten times a second between rounds.
        with closing(Consumer(reader_config(self._settings, "lag"))) as probe:
            lows, ends = watermarks(self._settings, probe, every, timeout_s=5)
        lag = {}
        for agent, tps in committed.items():
            for tp in tps:
                key = (tp.topic, tp.partition)
                # nothing committed yet: the group starts at the earliest
                start = tp.offset if tp.offset >= 0 else lows[key]
                lag[agent, tp.topic, tp.partition] = max(0, ends[key] - start)
        return lag

    def _report_spares(self, admin: AdminClient, sizes: Mapping[str, int]) -> None:
        assert self._on_spare is not None
        ids = [group_id for group_id, _ in self._groups.values()]
        described = {
            group_id: future.result(10)
            for group_id, future in admin.describe_consumer_groups(ids).items()
        }
        for agent, (group_id, topics) in self._groups.items():
            group = described[group_id]
            partitions = sum(sizes.get(t, 0) for t in topics)
            stable = group.state == ConsumerGroupState.STABLE
            self._on_spare(agent, stable and len(group.members) > partitions)
