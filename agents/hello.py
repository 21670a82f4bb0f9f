"""The smallest useful mesh app: one agent answering typed questions.

mesh dev up
mesh run agents.hello:app &
mesh publish agents.hello:Question --data '{"question_id": "q1", "text": "ping?"}'
mesh tail answers --from-beginning --json --count 1
"""

from __future__ import annotations

from datetime import UTC, datetime

from mesh import Context, Event, Mesh


class Question(Event, topic="questions", key="question_id", name="mesh.examples.Question"):
    """Someone asked something."""

    question_id: str
    text: str


class Answer(Event, topic="answers", key="question_id", name="mesh.examples.Answer"):
    """The answer to a :class:`Question`, keyed like it so a thread stays in order."""

    question_id: str
    text: str
    answered_at: datetime


app = Mesh("hello")


@app.agent("answerer", consumes=Question)
async def answerer(event: Question, ctx: Context) -> Answer:
    ctx.log.info("answering %s", event.question_id)
    return Answer(
        question_id=event.question_id,
        text=f"you asked: {event.text}",
        answered_at=datetime.now(UTC),
    )
