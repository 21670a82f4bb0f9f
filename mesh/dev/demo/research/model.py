"""The "LLM" of the research agents: a small protocol and an offline, deterministic model.

Agents depend on :class:`LanguageModel` only, so a team plugs in its own client. The
default, :class:`OfflineModel`, needs no network and no keys: its answer, its latency and
whether it fails are drawn from a generator seeded by (seed, prompt, attempt), so a run
is reproducible while a retry of the same prompt gets a fresh draw. Failures it injects,
as a hosted model produces them:

- ``transient``: :class:`ModelUnavailableError` (a 503, a rate limit): worth retrying;
- ``timeout``: the call hangs until the agent's ``timeout`` cancels it;
- ``malformed``: text that is not the JSON asked for, so :func:`parse_completion` raises
  :class:`MalformedOutputError`, which is not retried (the same prompt gives the same
  text) and goes to the dead-letter topic.

Environment (read by :meth:`OfflineModel.from_env`): ``RESEARCH_MODEL_LATENCY_MS``
(``"200-800"``), ``RESEARCH_MODEL_FAILURE_RATE`` (``0.1``), ``RESEARCH_MODEL_SEED``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

__all__ = [
    "Completion",
    "Draw",
    "LanguageModel",
    "MalformedOutputError",
    "ModelError",
    "ModelUnavailableError",
    "OfflineModel",
    "parse_completion",
    "parse_latency_ms",
]

Failure = Literal["transient", "timeout", "malformed"]

#: How injected failures split, by kind.
_FAILURE_WEIGHTS: dict[Failure, float] = {"transient": 0.7, "timeout": 0.2, "malformed": 0.1}
_WORDS = (
    *("latency", "throughput", "partition", "replica", "offset", "schema", "consumer"),
    *("producer", "broker", "retention", "compaction", "ordering", "backpressure"),
    *("idempotence", "rebalance", "lag", "quorum", "durability", "checkpoint", "watermark"),
)


class ModelError(Exception):
    """The model could not give a usable answer."""


class ModelUnavailableError(ModelError):
    """The model service failed this call (overloaded, rate limited): try again later."""


class MalformedOutputError(ModelError):
    """The model answered, but not in the asked-for format: retrying will not help."""


class Completion(BaseModel):
    """What the agents ask the model for, as JSON: a text, a list of items, a score in [0, 1]."""

    text: str
    items: list[str] = Field(default_factory=list)
    score: float = Field(default=0.5, ge=0.0, le=1.0)


def parse_completion(raw: str) -> Completion:
    """The model's answer as a :class:`Completion`, or :class:`MalformedOutputError`."""
    try:
        return Completion.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedOutputError(f"model output is not a completion: {raw[:80]!r}") from exc


class LanguageModel(Protocol):
    """Anything that answers a prompt with text; *attempt* is 1 on the first try."""

    async def complete(self, prompt: str, *, attempt: int = 1) -> str: ...


@dataclass(frozen=True)
class Draw:
    """What the offline model does for one (prompt, attempt): wait, then fail or answer."""

    latency_s: float
    failure: Failure | None
    text: str


@dataclass(frozen=True)
class OfflineModel:
    """A deterministic stand-in for a hosted model; see the module docstring."""

    latency_ms: tuple[int, int] = (200, 800)
    failure_rate: float = 0.0
    seed: str = "mesh"
    #: How long a "timeout" hangs; the agent's timeout should be far shorter.
    hang_s: float = 120.0

    def __post_init__(self) -> None:
        low, high = self.latency_ms
        if not 0 <= low <= high:
            raise ValueError(f"latency range {low}-{high} ms is not a range")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure rate {self.failure_rate} is not within [0, 1]")

    @classmethod
    def from_env(cls) -> OfflineModel:
        env = os.environ
        return cls(
            latency_ms=parse_latency_ms(env.get("RESEARCH_MODEL_LATENCY_MS", "200-800")),
            failure_rate=float(env.get("RESEARCH_MODEL_FAILURE_RATE", "0")),
            seed=env.get("RESEARCH_MODEL_SEED", "mesh"),
        )

    def draw(self, prompt: str, *, attempt: int = 1) -> Draw:
        """The outcome of a call, without the waiting (pure: same arguments, same draw)."""
        digest = hashlib.sha256(f"{self.seed}\0{attempt}\0{prompt}".encode()).digest()
        rng = random.Random(digest)
        latency_s = rng.uniform(*self.latency_ms) / 1000
        failure: Failure | None = None
        if rng.random() < self.failure_rate:
            kinds, weights = zip(*_FAILURE_WEIGHTS.items(), strict=True)
            failure = rng.choices(kinds, weights)[0]
        # The answer depends on the prompt only, so a retry that succeeds says the same.
        answer = random.Random(hashlib.sha256(f"{self.seed}\0{prompt}".encode()).digest())
        if failure == "malformed":
            text = "Sure! Here is what I found: " + " ".join(answer.sample(_WORDS, 4))
        else:
            text = json.dumps(
                {
                    "text": " ".join(answer.sample(_WORDS, 8)).capitalize() + ".",
                    "items": [
                        " ".join(answer.sample(_WORDS, 3)) for _ in range(answer.randint(2, 5))
                    ],
                    "score": round(answer.random(), 3),
                }
            )
        return Draw(latency_s=latency_s, failure=failure, text=text)

    async def complete(self, prompt: str, *, attempt: int = 1) -> str:
        draw = self.draw(prompt, attempt=attempt)
        await asyncio.sleep(draw.latency_s)
        if draw.failure == "transient":
            raise ModelUnavailableError("offline model: injected transient failure (503)")
        if draw.failure == "timeout":
            await asyncio.sleep(self.hang_s)
            raise ModelUnavailableError(f"offline model: no answer within {self.hang_s:.0f}s")
        return draw.text


def parse_latency_ms(text: str) -> tuple[int, int]:
    """``"200-800"`` -> ``(200, 800)``; ``"300"`` -> ``(300, 300)``."""
    low, _, high = text.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"latency {text!r}: expected milliseconds such as 200-800") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise ValueError(f"latency {text!r}: expected LOW-HIGH with 0 <= LOW <= HIGH")
    return bounds
