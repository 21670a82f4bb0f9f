"""The planner, written with pydantic-ai: mesh carries the events, the framework stays as it is.

:func:`plan` runs a pydantic-ai ``Agent`` with a typed output (:class:`Plan`). Offline
(the default) its model is a ``FunctionModel`` answering through the app's
:class:`~mesh.dev.demo.research.model.LanguageModel` (the deterministic offline one); with
``RESEARCH_PLANNER_MODEL`` set (e.g. ``openai:gpt-4o-mini``, plus that provider's API
key) the same agent calls that model unchanged. An answer that does not fit :class:`Plan` is a
:class:`~mesh.dev.demo.research.model.MalformedOutputError`, dead-lettered rather than retried.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field
from pydantic_ai import Agent
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, UserPromptPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from mesh.dev.demo.research.model import LanguageModel, MalformedOutputError, parse_completion

__all__ = ["MODEL_ENV", "Plan", "plan", "plan_prompt"]

MODEL_ENV = "RESEARCH_PLANNER_MODEL"


class Plan(BaseModel):
    """Subtasks that together answer the question, each small enough for one researcher."""

    subtasks: list[str] = Field(min_length=1, max_length=8)


_agent: Agent[None, Plan] = Agent(
    output_type=Plan,
    name="planner",
    instructions=(
        "You plan research. Split the user's question into 2 to 5 independent subtasks, "
        "each answerable on its own; on a revision, address the reviewer's feedback."
    ),
    retries=0,  # a malformed plan is dead-lettered; transient errors retry through mesh
    defer_model_check=True,
)


def plan_prompt(question: str, revision: int, feedback: str | None) -> str:
    prompt = f"Question: {question}"
    if revision:
        prompt += f"\nRevision {revision}. Reviewer feedback: {feedback}"
    return prompt


async def plan(
    question: str,
    *,
    revision: int = 0,
    feedback: str | None = None,
    model: LanguageModel,
    attempt: int = 1,
) -> Plan:
    """Plan the subtasks of *question* (revision 0) or of a revision asked for with *feedback*.

    *model* answers unless ``RESEARCH_PLANNER_MODEL`` names a pydantic-ai model.
    """
    chosen: Model | str = os.environ.get(MODEL_ENV) or _function_model(model, attempt)
    try:
        result = await _agent.run(plan_prompt(question, revision, feedback), model=chosen)
    except UnexpectedModelBehavior as exc:
        raise MalformedOutputError(f"the planner's model gave no valid plan: {exc}") from exc
    return result.output


def _function_model(model: LanguageModel, attempt: int) -> FunctionModel:
    """*model* as a pydantic-ai model: the items of its completion are the plan."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = next(
            str(part.content)
            for message in reversed(messages)
            for part in message.parts
            if isinstance(part, UserPromptPart)
        )
        completion = parse_completion(await model.complete(prompt, attempt=attempt))
        call = ToolCallPart(info.output_tools[0].name, {"subtasks": completion.items})
        return ModelResponse(parts=[call])

    return FunctionModel(respond, model_name="mesh-research")
