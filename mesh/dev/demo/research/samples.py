"""Sample submissions: reproducible questions for demos and tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from mesh.dev.demo.research.events import ResearchSubmitted

__all__ = ["submissions"]

_SUBJECTS = (
    "exactly-once delivery",
    "consumer group rebalancing",
    "schema evolution",
    "dead-letter queues",
    "event sourcing",
    "backpressure in stream processing",
    "idempotent producers",
    "log compaction",
    "partition key design",
    "retry topics",
)
_ANGLES = (
    "What are the trade-offs of {}?",
    "How do large teams operate {} in production?",
    "Compare the main approaches to {}.",
    "What fails first with {} under load?",
)


def submissions(count: int, *, run_id: str) -> list[ResearchSubmitted]:
    """*count* submissions with ids ``{run_id}-0001`` ...; the questions depend on *run_id*.

    Each question names the team asking, so no two prompts are alike and the offline
    model's draws (failures included) are independent from request to request.
    """
    rng = random.Random(run_id)
    now = datetime.now(UTC)
    return [
        ResearchSubmitted(
            request_id=f"{run_id}-{n:04d}",
            question=f"{rng.choice(_ANGLES).format(rng.choice(_SUBJECTS))} (team {n})",
            submitted_at=now,
        )
        for n in range(1, count + 1)
    ]
