"""The events of the research pipeline (Avro namespace ``mesh.research``, topics ``research.*``).

Every event of one request carries the same correlation id (the request id), so
``mesh trace`` follows a request across all agents and revisions. Keys decide ordering
and placement: findings are keyed by request, so all findings of a request land in one
partition, which the aggregator reads back as its state.
"""

from __future__ import annotations

from datetime import datetime

from mesh import Event

__all__ = [
    "FindingReported",
    "ReportDrafted",
    "ReportPublished",
    "ResearchRequested",
    "ResearchSubmitted",
    "RevisionRequested",
    "SubtaskPlanned",
]


class ResearchSubmitted(
    Event, topic="research.submissions", key="request_id", name="mesh.research.ResearchSubmitted"
):
    """Someone asked a question, as typed: not yet checked."""

    request_id: str
    question: str
    submitted_at: datetime


class ResearchRequested(
    Event, topic="research.requests", key="request_id", name="mesh.research.ResearchRequested"
):
    """A submission the intake accepted, its question normalised."""

    request_id: str
    question: str


class SubtaskPlanned(
    Event, topic="research.subtasks", key="subtask_id", name="mesh.research.SubtaskPlanned"
):
    """One of ``total`` subtasks of a request's revision; keyed by subtask so they spread out."""

    request_id: str
    subtask_id: str
    revision: int
    index: int
    total: int
    question: str
    subtask: str


class FindingReported(
    Event, topic="research.findings", key="request_id", name="mesh.research.FindingReported"
):
    """A researcher's answer to one subtask; keyed by request for the fan-in."""

    request_id: str
    subtask_id: str
    revision: int
    index: int
    total: int
    question: str
    summary: str
    confidence: float


class ReportDrafted(
    Event, topic="research.drafts", key="request_id", name="mesh.research.ReportDrafted"
):
    """Every finding of a revision is in: a draft for the reviewer."""

    request_id: str
    revision: int
    question: str
    body: str
    findings: int


class RevisionRequested(
    Event, topic="research.revisions", key="request_id", name="mesh.research.RevisionRequested"
):
    """The reviewer sent a draft back; the planner plans revision ``revision``."""

    request_id: str
    revision: int
    question: str
    feedback: str


class ReportPublished(
    Event, topic="research.reports", key="request_id", name="mesh.research.ReportPublished"
):
    """The accepted report: the end of a request."""

    request_id: str
    question: str
    revisions: int
    body: str
    published_at: datetime
