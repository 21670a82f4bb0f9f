"""What a demo run did, read from Kafka alone: the app's event, retry and dead-letter topics.

Nothing is taken from the workers' memory: a request is complete when its terminal event
is in its topic, failed when one of its records is in a dead-letter topic, and every
count is of records that carry one of the run's correlation ids (the request ids), so
other runs sharing the topics do not leak in. Times are the records' own timestamps.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.errors import BrokerError
from mesh.headers import CORRELATION_ID, EVENT_TYPE, EXCEPTION_CLASS, PRODUCED_BY
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.topics import existing_topics
from mesh.runtime.app import Mesh

__all__ = ["AgentActivity", "RunStatus", "RunWatcher"]

_RATE_WINDOW_S = 5.0


@dataclass
class AgentActivity:
    """One agent's share of the run, as its topics show it."""

    received: int = 0  # records of the run on its input and retry topics
    emitted: int = 0  # records it produced (``mesh.produced-by``)
    retries: int = 0
    dead_letters: int = 0
    recent: deque[float] = field(default_factory=deque)  # emit times (s) in the rate window

    def rate(self, now_s: float) -> float:
        """Events emitted per second over the last few seconds."""
        while self.recent and self.recent[0] < now_s - _RATE_WINDOW_S:
            self.recent.popleft()
        return len(self.recent) / _RATE_WINDOW_S


@dataclass
class RunStatus:
    """The run so far; everything in it was read back from Kafka."""

    requests: frozenset[str]
    submitted_ms: dict[str, int] = field(default_factory=dict)
    completed_ms: dict[str, int] = field(default_factory=dict)
    #: Request -> (agent, error class) of its first dead letter.
    dead: dict[str, tuple[str, str]] = field(default_factory=dict)
    dead_letters: int = 0
    retries: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by event type
    agents: dict[str, AgentActivity] = field(default_factory=lambda: defaultdict(AgentActivity))

    @property
    def completed(self) -> int:
        return len(self.completed_ms)

    @property
    def failed(self) -> set[str]:
        """Requests that did not complete and have a dead letter."""
        return set(self.dead) - set(self.completed_ms)

    @property
    def in_flight(self) -> int:
        return len(self.submitted_ms) - self.completed - len(self.failed)

    @property
    def settled(self) -> bool:
        """Every request completed, or its failure is in a dead-letter topic."""
        return self.completed + len(self.failed) == len(self.requests)

    @property
    def handled(self) -> int:
        """Records the agents received: events on their topics, plus retried ones."""
        return sum(activity.received for activity in self.agents.values())

    def latencies_ms(self) -> list[int]:
        """End to end, per completed request: submission to terminal event."""
        return sorted(
            done - self.submitted_ms[request]
            for request, done in self.completed_ms.items()
            if request in self.submitted_ms
        )

    def percentile_ms(self, q: int) -> float | None:
        values = self.latencies_ms()
        if not values:
            return None
        if len(values) == 1:
            return float(values[0])
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class RunWatcher:
    """Reads the app's topics from the beginning and folds the run's records into a status."""

    def __init__(
        self,
        settings: Settings,
        app: Mesh,
        *,
        requests: Iterable[str],
        submitted_topic: str,
        completed_topic: str,
    ) -> None:
        self.status = RunStatus(requests=frozenset(requests))
        self._submitted_topic = submitted_topic
        self._completed_topic = completed_topic
        self._agents = set(app.agents)
        self._consumers_of: dict[str, list[str]] = defaultdict(list)  # topic -> agents
        self._retry_agent: dict[str, str] = {}
        self._dlq_agent: dict[str, str] = {}
        for name, described in app.describe().items():
            for event_type in app.agents[name].consumes:
                self._consumers_of[event_type.topic()].append(name)
            self._retry_agent.update(dict.fromkeys(described["retry_topics"], name))
            self._dlq_agent.update(dict.fromkeys(described["dead_letter_topics"], name))
        topics = {t.topic() for t in app.event_types.values()}
        topics |= set(self._retry_agent) | set(self._dlq_agent)
        sizes = existing_topics(AdminClient(admin_config(settings)))
        missing = sorted(topics - set(sizes))
        if missing:
            raise BrokerError(f"topics not created yet: {', '.join(missing)}")
        self._consumer = Consumer(reader_config(settings, "demo-watch"))
        self._consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in sorted(topics)
                for p in range(sizes[topic])
            ]
        )

    def poll(self, timeout_s: float = 0.2) -> RunStatus:
        """Fold in what arrived within *timeout_s*; return the updated status."""
        deadline = time.monotonic() + timeout_s
        while True:
            batch = self._consumer.consume(1000, timeout=max(deadline - time.monotonic(), 0))
            for msg in batch:
                if msg.error() is None:
                    self._fold(msg)
            if len(batch) < 1000 or time.monotonic() >= deadline:
                return self.status

    def close(self) -> None:
        self._consumer.close()

    def _fold(self, msg: Message) -> None:
        headers = dict(msg.headers() or ())
        request = (headers.get(CORRELATION_ID) or b"").decode()
        status = self.status
        if request not in status.requests:
            return
        topic = msg.topic() or ""
        _, timestamp_ms = msg.timestamp()
        if topic in self._retry_agent:
            status.retries += 1
            activity = status.agents[self._retry_agent[topic]]
            activity.retries += 1
            activity.received += 1
            return
        if topic in self._dlq_agent:
            agent = self._dlq_agent[topic]
            status.dead_letters += 1
            status.agents[agent].dead_letters += 1
            error = (headers.get(EXCEPTION_CLASS) or b"").decode()
            status.dead.setdefault(request, (agent, error))
            return
        status.events[(headers.get(EVENT_TYPE) or b"").decode()] += 1
        for agent in self._consumers_of.get(topic, ()):
            status.agents[agent].received += 1
        producer = (headers.get(PRODUCED_BY) or b"").decode()
        if producer in self._agents:
            activity = status.agents[producer]
            activity.emitted += 1
            activity.recent.append(time.monotonic())
        if topic == self._submitted_topic:
            status.submitted_ms.setdefault(request, timestamp_ms)
        elif topic == self._completed_topic:
            status.completed_ms.setdefault(request, timestamp_ms)
