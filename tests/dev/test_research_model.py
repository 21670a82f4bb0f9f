"""The research agents' offline model and their pydantic-ai planner, without network or keys."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pydantic_ai import models

from mesh.dev.demo.research.model import (
    MalformedOutputError,
    ModelUnavailableError,
    OfflineModel,
    parse_completion,
    parse_latency_ms,
)
from mesh.dev.demo.research.planner import MODEL_ENV, plan, plan_prompt

PROMPTS = [f"What are the trade-offs of design {n}?" for n in range(2000)]


def test_same_prompt_and_attempt_give_the_same_draw() -> None:
    model = OfflineModel(failure_rate=0.3, seed="s")
    assert [model.draw(p) for p in PROMPTS[:50]] == [model.draw(p) for p in PROMPTS[:50]]
    other_seed = OfflineModel(failure_rate=0.3, seed="t")
    assert [model.draw(p) for p in PROMPTS[:50]] != [other_seed.draw(p) for p in PROMPTS[:50]]


def test_a_retry_draws_again_but_answers_the_same() -> None:
    model = OfflineModel(failure_rate=0.5, seed="s")
    reliable = OfflineModel(failure_rate=0.0, seed="s")
    failing = [p for p in PROMPTS[:200] if model.draw(p, attempt=1).failure == "transient"]
    recovered = [p for p in failing if model.draw(p, attempt=2).failure is None]
    assert recovered, "a transient failure must be able to succeed on a later attempt"
    for prompt in recovered:
        assert model.draw(prompt, attempt=2).text == reliable.draw(prompt).text


def test_failures_follow_the_rate_and_the_mix() -> None:
    model = OfflineModel(failure_rate=0.2, latency_ms=(200, 800))
    draws = [model.draw(p) for p in PROMPTS]
    kinds = Counter(d.failure for d in draws)
    assert 0.17 < (len(draws) - kinds[None]) / len(draws) < 0.23
    assert kinds["transient"] > kinds["timeout"] > kinds["malformed"] > 0
    assert all(0.2 <= d.latency_s <= 0.8 for d in draws)
    assert OfflineModel(failure_rate=0.0).draw(PROMPTS[0]).failure is None


def test_answers_parse_and_malformed_ones_are_refused() -> None:
    model = OfflineModel(failure_rate=1.0)
    for prompt in PROMPTS[:300]:
        draw = model.draw(prompt)
        if draw.failure == "malformed":
            with pytest.raises(MalformedOutputError):
                parse_completion(draw.text)
    completion = parse_completion(OfflineModel().draw("q").text)
    assert 2 <= len(completion.items) <= 5
    assert 0.0 <= completion.score <= 1.0


def test_complete_raises_transient_failures_and_hangs_on_timeouts() -> None:
    model = OfflineModel(failure_rate=1.0, latency_ms=(0, 0), hang_s=30.0)
    transient = next(p for p in PROMPTS if model.draw(p).failure == "transient")
    hanging = next(p for p in PROMPTS if model.draw(p).failure == "timeout")
    with pytest.raises(ModelUnavailableError):
        asyncio.run(model.complete(transient))

    async def bounded() -> None:
        async with asyncio.timeout(0.2):
            await model.complete(hanging)

    with pytest.raises(TimeoutError):
        asyncio.run(bounded())


def test_latency_ranges_parse() -> None:
    assert parse_latency_ms("200-800") == (200, 800)
    assert parse_latency_ms("300") == (300, 300)
    for bad in ("800-200", "fast", "-5"):
        with pytest.raises(ValueError, match="latency"):
            parse_latency_ms(bad)
    with pytest.raises(ValueError, match="range"):
        OfflineModel(latency_ms=(5, 1))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configured model, and pydantic-ai refuses any request to a real one."""
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr(models, "ALLOW_MODEL_REQUESTS", False)


@pytest.mark.usefixtures("offline")
def test_the_pydantic_ai_planner_runs_offline_and_its_fan_out_depends_on_the_question() -> None:
    model = OfflineModel(latency_ms=(0, 0))
    plans = {q: asyncio.run(plan(q, model=model)).subtasks for q in PROMPTS[:20]}
    assert all(2 <= len(subtasks) <= 5 for subtasks in plans.values())
    assert len({len(subtasks) for subtasks in plans.values()}) > 1
    again = asyncio.run(plan(PROMPTS[0], model=model)).subtasks
    assert again == plans[PROMPTS[0]]
    revised = asyncio.run(plan(PROMPTS[0], revision=1, feedback="go deeper", model=model))
    assert revised.subtasks != plans[PROMPTS[0]]


@pytest.mark.usefixtures("offline")
def test_the_planner_turns_bad_model_output_into_a_non_retryable_error() -> None:
    model = OfflineModel(failure_rate=1.0, latency_ms=(0, 0))
    malformed = next(
        p for p in PROMPTS if model.draw(plan_prompt(p, 0, None)).failure == "malformed"
    )
    transient = next(
        p for p in PROMPTS if model.draw(plan_prompt(p, 0, None)).failure == "transient"
    )
    with pytest.raises(MalformedOutputError):
        asyncio.run(plan(malformed, model=model))
    with pytest.raises(ModelUnavailableError):
        asyncio.run(plan(transient, model=model))
