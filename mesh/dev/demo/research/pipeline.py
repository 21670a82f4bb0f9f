"""The research app: its agents and how they are wired (``mesh.dev.demo.research:app``)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path

from mesh import Context, Mesh
from mesh.dev.demo.research.aggregator import Aggregator
from mesh.dev.demo.research.events import (
    FindingReported,
    ReportDrafted,
    ReportPublished,
    ResearchRequested,
    ResearchSubmitted,
    RevisionRequested,
    SubtaskPlanned,
)
from mesh.dev.demo.research.model import LanguageModel, OfflineModel, parse_completion
from mesh.dev.demo.research.planner import plan

__all__ = ["ACCEPT_SCORE", "MAX_REVISIONS", "InvalidRequestError", "app"]

#: Revisions the reviewer may ask for before it publishes what it has.
MAX_REVISIONS = 2
#: Drafts the reviewer scores below this go back for a revision.
ACCEPT_SCORE = 0.3
_QUESTION_CHARS = (3, 500)


class InvalidRequestError(ValueError):
    """A submission no agent can work on (configured non-retryable: dead-lettered at once)."""


#: Its schemas ship beside it: the demo runs from any directory.
app = Mesh("research", schemas_dir=Path(__file__).parent / "schemas")


@functools.cache
def language_model() -> LanguageModel:
    """The model the researcher and the reviewer call: the offline one, from the environment."""
    return OfflineModel.from_env()


@app.agent("intake", consumes=ResearchSubmitted)
def intake(event: ResearchSubmitted) -> ResearchRequested:
    """Check and normalise a submission (sync: runs in the thread pool)."""
    question = " ".join(event.question.split())
    low, high = _QUESTION_CHARS
    if not low <= len(question) <= high:
        raise InvalidRequestError(f"a question has {low} to {high} characters, not {len(question)}")
    return ResearchRequested(request_id=event.request_id, question=question)


@app.agent("planner", consumes=[ResearchRequested, RevisionRequested])
async def planner(
    event: ResearchRequested | RevisionRequested, ctx: Context
) -> list[SubtaskPlanned]:
    """Fan out: one ``SubtaskPlanned`` per subtask; how many depends on the question."""
    revision = event.revision if isinstance(event, RevisionRequested) else 0
    feedback = event.feedback if isinstance(event, RevisionRequested) else None
    result = await plan(
        event.question,
        revision=revision,
        feedback=feedback,
        model=language_model(),
        attempt=ctx.attempt,
    )
    subtasks = result.subtasks
    ctx.log.info("revision %d of %s: %d subtasks", revision, event.request_id, len(subtasks))
    return [
        SubtaskPlanned(
            request_id=event.request_id,
            subtask_id=f"{event.request_id}/r{revision}/{index}",
            revision=revision,
            index=index,
            total=len(subtasks),
            question=event.question,
            subtask=subtask,
        )
        for index, subtask in enumerate(subtasks)
    ]


@app.agent("researcher", consumes=SubtaskPlanned)
async def researcher(event: SubtaskPlanned, ctx: Context) -> FindingReported:
    """Answer one subtask; many run at once, across partitions and worker processes."""
    prompt = f"Research this subtask: {event.subtask}\nOf the question: {event.question}"
    completion = parse_completion(await language_model().complete(prompt, attempt=ctx.attempt))
    return FindingReported(
        request_id=event.request_id,
        subtask_id=event.subtask_id,
        revision=event.revision,
        index=event.index,
        total=event.total,
        question=event.question,
        summary=completion.text,
        confidence=completion.score,
    )


app.agent("aggregator", consumes=FindingReported)(Aggregator(app).handle)


@app.agent("reviewer", consumes=ReportDrafted)
async def reviewer(event: ReportDrafted, ctx: Context) -> ReportPublished | RevisionRequested:
    """Publish the draft, or send it back for a revision (at most ``MAX_REVISIONS``)."""
    prompt = f"Review this report on {event.question!r}, scoring it 0-1:\n{event.body}"
    review = parse_completion(await language_model().complete(prompt, attempt=ctx.attempt))
    if review.score < ACCEPT_SCORE and event.revision < MAX_REVISIONS:
        return RevisionRequested(
            request_id=event.request_id,
            revision=event.revision + 1,
            question=event.question,
            feedback=review.text,
        )
    return ReportPublished(
        request_id=event.request_id,
        question=event.question,
        revisions=event.revision,
        body=event.body,
        published_at=datetime.now(UTC),
    )
