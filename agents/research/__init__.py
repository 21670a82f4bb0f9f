"""A research pipeline of five agents: what ``mesh demo`` runs.

::

    ResearchSubmitted -> intake -> ResearchRequested -> planner (pydantic-ai)
        -> SubtaskPlanned x N (N depends on the question) -> researcher (concurrent)
        -> FindingReported -> aggregator (fan-in, state rebuilt from Kafka)
        -> ReportDrafted -> reviewer -> ReportPublished
                                    \\-> RevisionRequested -> planner (at most twice)

Run it with ``MESH_CONFIG=agents/research/mesh.toml mesh run agents.research:app``
(timeouts and retry policies per agent); schemas are in ``schemas/mesh.research.*``.
"""

from agents.research.events import (
    FindingReported,
    ReportDrafted,
    ReportPublished,
    ResearchRequested,
    ResearchSubmitted,
    RevisionRequested,
    SubtaskPlanned,
)
from agents.research.pipeline import app
from agents.research.samples import submissions

__all__ = [
    "FindingReported",
    "ReportDrafted",
    "ReportPublished",
    "ResearchRequested",
    "ResearchSubmitted",
    "RevisionRequested",
    "SubtaskPlanned",
    "app",
    "submissions",
]
