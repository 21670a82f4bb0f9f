"""Prometheus metrics of ``mesh run``: what each agent's worker records on its hot path.

Names follow Prometheus conventions (``mesh_`` prefix, seconds, ``_total`` counters) and
labels stay bounded: agent, topic, event type, outcome, error kind, partition; never an
event or correlation id. docs/operations.md documents every metric.

The worker calls an :class:`AgentMetrics` for each event, tens of thousands of times a
second, so its methods only add to plain numbers (0.1-0.5 us a call); :class:`Metrics`
turns them into metric families when scraped. Each :class:`Metrics` has a registry of
its own: tests and several apps in one process never share counters.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from mesh.runtime.threads import HandlerThreads

__all__ = ["AgentMetrics", "Metrics", "Outcome"]

log = logging.getLogger(__name__)

#: How a handler attempt ended. Retries and dead letters are counted separately.
Outcome = Literal["ok", "error", "timeout"]

_HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_CHAIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: A worker whose poll loop has not turned for this long is not ready (a revoke may
#: hold it for the drain timeout, 30 s by default).
_POLL_STALE_S = 60.0


class Metrics:
    """The runtime metrics of one ``mesh run`` process, in a registry of their own.

    Recorders keep plain numbers and this collector turns them into metric families at
    scrape time: a labelled ``prometheus_client`` child costs 1-3 us per call with its
    locks, a dict lookup and an integer add about a tenth of that. Each number has one
    writer (the worker's loop thread); a scrape reads copies.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._agents: dict[str, AgentMetrics] = {}
        self._threads: HandlerThreads | None = None
        self.registry.register(self)

    def spare(self, agent: str, spare: bool) -> None:
        """Whether *agent*'s group is stable with more members than partitions."""
        self.agent(agent).spare = spare

    def watch_threads(self, threads: HandlerThreads) -> None:
        """Report the sync handlers' *threads*: stuck ones, and readiness once degraded."""
        self._threads = threads

    def agent(self, name: str) -> AgentMetrics:
        """The recorder of agent *name* (one per agent, created on first use)."""
        recorder = self._agents.get(name)
        if recorder is None:
            recorder = self._agents[name] = AgentMetrics(name)
        return recorder

    def ready(self) -> bool:
        """Every agent has partitions to work on (or is a spare of a stable group) and its
        poll loop turned recently, and sync handlers still have all their threads.

        A member that joined and holds nothing (it lost its partitions and never got them
        back) is not ready: an orchestrator restarts it. A spare member (more members
        than partitions) is ready once the lag thread saw the group stable; brokers that
        list no members (Tansu) never show it.
        """
        now = time.monotonic()
        if self._threads is not None and self._threads.degraded:
            return False
        return bool(self._agents) and all(
            (a._partitions > 0 or a.spare) and now - a.last_poll_s < _POLL_STALE_S
            for a in self._agents.values()
        )

    def collect(self) -> Iterator[Metric]:
        agents = list(self._agents.values())
        consumed = CounterMetricFamily(
            "mesh_events_consumed", "Records polled.", labels=["agent", "topic"]
        )
        handled = CounterMetricFamily(
            "mesh_events_handled",
            "Handler attempts finished, by outcome (ok, error, timeout).",
            labels=["agent", "topic", "event_type", "outcome"],
        )
        duration = HistogramMetricFamily(
            "mesh_handler_duration_seconds",
            "Time a handler attempt took.",
            labels=["agent", "event_type", "outcome"],
        )
        emitted = CounterMetricFamily(
            "mesh_events_emitted",
            "Events emitted by handlers and acknowledged by the broker.",
            labels=["agent", "topic", "event_type"],
        )
        retried = CounterMetricFamily(
            "mesh_events_retried",
            "Records forwarded to a retry topic, by source topic and error kind.",
            labels=["agent", "topic", "kind"],
        )
        dead = CounterMetricFamily(
            "mesh_events_dead_lettered",
            "Records forwarded to a dead-letter topic, by source topic and error kind.",
            labels=["agent", "topic", "kind"],
        )
        chain = HistogramMetricFamily(
            "mesh_chain_latency_seconds",
            "Time from the first event of a chain to the end of each step handling it.",
            labels=["agent"],
        )
        lateness = HistogramMetricFamily(
            "mesh_retry_lateness_seconds",
            "How long after its due time a retry started.",
            labels=["agent"],
        )
        gauges = {
            "in_flight": GaugeMetricFamily(
                "mesh_events_in_flight", "Records buffered or being handled.", labels=["agent"]
            ),
            "paused": GaugeMetricFamily(
                "mesh_paused_partitions",
                "Partitions paused by backpressure or by a retry not yet due.",
                labels=["agent"],
            ),
            "partitions": GaugeMetricFamily(
                "mesh_assigned_partitions",
                "Partitions assigned to this process.",
                labels=["agent"],
            ),
        }
        for a in agents:
            name = a.agent
            for topic, count in list(a._consumed.items()):
                consumed.add_metric([name, topic], count)
            by_outcome: dict[tuple[str, str], list[float]] = {}
            for (topic, etype, outcome), live in list(a._handled.items()):
                cells = list(live)
                handled.add_metric([name, topic, etype, outcome], sum(cells[:-1]))
                merged = by_outcome.setdefault((etype, outcome), [0] * len(cells))
                for i, cell in enumerate(cells):
                    merged[i] += cell
            for (etype, outcome), cells in by_outcome.items():
                _add_histogram(duration, [name, etype, outcome], _HANDLER_BUCKETS, cells)
            for labels, count in list(a._emitted.items()):
                emitted.add_metric([name, *labels], count)
            for labels, count in list(a._retried.items()):
                retried.add_metric([name, *labels], count)
            for labels, count in list(a._dead_lettered.items()):
                dead.add_metric([name, *labels], count)
            _add_histogram(chain, [name], _CHAIN_BUCKETS, list(a._chain))
            _add_histogram(lateness, [name], _LATENESS_BUCKETS, list(a._lateness))
            gauges["in_flight"].add_metric([name], a._in_flight)
            gauges["paused"].add_metric([name], a._paused)
            gauges["partitions"].add_metric([name], a._partitions)
        yield from (consumed, handled, duration, emitted, retried, dead, chain, lateness)
        yield from gauges.values()
        yield GaugeMetricFamily(
            "mesh_handler_threads_stuck",
            "Threads still running a sync handler call whose timeout passed.",
            value=0 if self._threads is None else self._threads.stuck,
        )
        yield GaugeMetricFamily(
            "mesh_ready",
            "1 when every agent holds partitions (or is a spare) and is polling (/readyz).",
            value=int(self.ready()),
        )


def _add_histogram(
    family: HistogramMetricFamily, labels: list[str], bounds: Sequence[float], cells: list[float]
) -> None:
    """*cells*: a count per bucket (the last one is +Inf), then the sum."""
    buckets, total = [], 0.0
    for bound, count in zip((*bounds, float("inf")), cells[:-1], strict=True):
        total += count
        buckets.append((floatToGoString(bound), total))
    family.add_metric(labels, buckets, sum_value=cells[-1])


def _cells(bounds: Sequence[float]) -> list[float]:
    return [0] * (len(bounds) + 1) + [0.0]


class AgentMetrics:
    """What one agent's worker records; every method is cheap enough for the hot path."""

    __slots__ = (
        "_chain",
        "_consumed",
        "_dead_lettered",
        "_emitted",
        "_handled",
        "_in_flight",
        "_lateness",
        "_partitions",
        "_paused",
        "_retried",
        "agent",
        "joined",
        "last_poll_s",
        "spare",
    )

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._consumed: dict[str, int] = {}
        # (topic, event type, outcome) -> a count per duration bucket, then the sum.
        self._handled: dict[tuple[str, str, str], list[float]] = {}
        self._emitted: dict[tuple[str, str], int] = {}
        self._retried: dict[tuple[str, str], int] = {}
        self._dead_lettered: dict[tuple[str, str], int] = {}
        self._chain = _cells(_CHAIN_BUCKETS)
        self._lateness = _cells(_LATENESS_BUCKETS)
        self._in_flight = 0
        self._paused = 0
        self._partitions = 0
        self.joined = False  # the group has assigned it partitions (0 or more) once
        #: Its group is stable with more members than partitions (set by the lag thread).
        self.spare = False
        self.last_poll_s = 0.0

    def consumed(self, topic: str, n: int = 1) -> None:
        self._consumed[topic] = self._consumed.get(topic, 0) + n

    def handled(self, topic: str, event_type: str, outcome: Outcome, seconds: float) -> None:
        """One handler attempt ended with *outcome* after *seconds*."""
        key = (topic, event_type, outcome)
        cells = self._handled.get(key)
        if cells is None:
            cells = self._handled[key] = _cells(_HANDLER_BUCKETS)
        cells[bisect_left(_HANDLER_BUCKETS, seconds)] += 1
        cells[-1] += seconds

    def emitted(self, topic: str, event_type: str, n: int = 1) -> None:
        key = (topic, event_type)
        self._emitted[key] = self._emitted.get(key, 0) + n

    def retried(self, topic: str, kind: str) -> None:
        """A record of *topic* (the source topic) went to a retry topic; *kind*: ErrorKind."""
        key = (topic, kind)
        self._retried[key] = self._retried.get(key, 0) + 1

    def dead_lettered(self, topic: str, kind: str) -> None:
        """A record of *topic* (the source topic) was dead-lettered; *kind*: ErrorKind."""
        key = (topic, kind)
        self._dead_lettered[key] = self._dead_lettered.get(key, 0) + 1

    def chain_latency(self, correlation_id: str) -> None:
        """A step of the chain *correlation_id* finished; the chain began at its first event.

        mesh correlation ids are the first event's UUIDv7, which carries its creation time
        in milliseconds; a chain started with a caller's own correlation id is skipped.
        """
        started_s = chain_started_s(correlation_id)
        if started_s is not None:
            seconds = max(0.0, time.time() - started_s)
            self._chain[bisect_left(_CHAIN_BUCKETS, seconds)] += 1
            self._chain[-1] += seconds

    def retry_lateness(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self._lateness[bisect_left(_LATENESS_BUCKETS, seconds)] += 1
        self._lateness[-1] += seconds

    def in_flight(self, n: int) -> None:
        self._in_flight = n

    def paused_partitions(self, n: int) -> None:
        self._paused = n

    def assigned(self, partitions: int) -> None:
        """This process holds *partitions* partitions of the group now."""
        self.joined = True
        self._partitions = partitions

    def polling(self) -> None:
        """The poll loop turned: the agent is alive (read by :meth:`Metrics.ready`)."""
        self.last_poll_s = time.monotonic()


def chain_started_s(correlation_id: str) -> float | None:
    """The creation time (epoch seconds) of a UUIDv7 correlation id, else ``None``."""
    if len(correlation_id) != 36 or correlation_id[14] != "7":
        return None
    try:
        return int(correlation_id[:8] + correlation_id[9:13], 16) / 1000
    except ValueError:
        return None
