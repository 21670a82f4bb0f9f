"""Every topic an agent touches, named in one place.

An agent consumes its source topics and the retry topics of its consumer group, and
writes what fails for good to that group's dead-letter topics; records it delays wait in
the app's delay topics (:mod:`mesh.runtime.delay`). Retry and dead-letter topics are per
consumer group, so another group reading the same source never sees this group's
failures, and per delay, so within a partition of a retry topic the due times rise with
the offsets (the head of a partition is always the next record due).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mesh.event import Event

__all__ = ["Topology", "dead_letter_topic", "format_delay", "retry_topic"]


def format_delay(delay_ms: int) -> str:
    """``1s``, ``5m``, ``1500ms``: the suffix of a retry or delay topic."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def retry_topic(source_topic: str, group_id: str, delay_ms: int) -> str:
    return f"{source_topic}.{group_id}.retry.{format_delay(delay_ms)}"


def dead_letter_topic(source_topic: str, group_id: str) -> str:
    return f"{source_topic}.{group_id}.dlq"


@dataclass(frozen=True)
class Topology:
    """The topics of one agent: what it reads, where its failures go."""

    agent: str
    group_id: str
    #: Source topic -> the event types read from it (the first is the default).
    sources: Mapping[str, tuple[type[Event], ...]]
    #: Retry topic -> the source topic whose records it retries.
    retries: Mapping[str, str]
    #: Dead-letter topic -> its source topic.
    dead_letters: Mapping[str, str]

    @classmethod
    def of(
        cls,
        agent: str,
        group_id: str,
        consumes: Iterable[type[Event]],
        delays_ms: Sequence[int],
    ) -> Topology:
        sources: dict[str, tuple[type[Event], ...]] = {}
        for event_type in consumes:
            topic = event_type.topic()
            sources[topic] = (*sources.get(topic, ()), event_type)
        return cls(
            agent=agent,
            group_id=group_id,
            sources=sources,
            retries={
                retry_topic(source, group_id, delay): source
                for source in sources
                for delay in delays_ms
            },
            dead_letters={dead_letter_topic(source, group_id): source for source in sources},
        )

    @property
    def consumed(self) -> dict[str, tuple[type[Event], ...]]:
        """Every topic the agent subscribes to, with the event types its records decode to
        (a retry topic's records decode like its source's)."""
        return {
            **self.sources,
            **{retry: self.sources[source] for retry, source in self.retries.items()},
        }

    def source_of(self, topic: str) -> tuple[str, bool]:
        """The source topic a consumed *topic* belongs to, and whether it is a retry topic.

        Where a failed record goes next follows from this, never from its headers.
        """
        source = self.retries.get(topic)
        return (topic, False) if source is None else (source, True)

    def dead_letter_of(self, source_topic: str) -> str:
        return dead_letter_topic(source_topic, self.group_id)

    def retry_of(self, source_topic: str, delay_ms: int) -> str:
        return retry_topic(source_topic, self.group_id, delay_ms)
