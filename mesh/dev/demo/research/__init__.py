"""A research pipeline of five agents: what ``mesh demo`` runs.

::

    ResearchSubmitted -> intake -> ResearchRequested -> planner (pydantic-ai)
        -> SubtaskPlanned x N (N depends on the question) -> researcher (concurrent)
        -> FindingReported -> aggregator (fan-in, state rebuilt from Kafka)
        -> ReportDrafted -> reviewer -> ReportPublished
                                    \\-> RevisionRequested -> planner (at most twice)

``mesh demo`` runs it with the policies of ``mesh.toml`` beside this file (timeouts and
retries per agent); its ``.avsc`` files are in ``schemas/`` beside it too. All of it ships
in the package, so the demo needs no checkout.
"""

from mesh.dev.demo.research.events import (
    FindingReported,
    ReportDrafted,
    ReportPublished,
    ResearchRequested,
    ResearchSubmitted,
    RevisionRequested,
    SubtaskPlanned,
)
from mesh.dev.demo.research.pipeline import app
from mesh.dev.demo.research.samples import submissions

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
