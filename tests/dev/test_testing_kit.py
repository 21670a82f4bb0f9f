"""The kit users test their agents with (mesh.testing): an app served on the session's
broker with publish/expect, and one handler called without a broker."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mesh import Context, Event, Mesh, RetryPolicy, Settings
from mesh.testing import call_agent, unique_name
from tests.support import mesh_env

TESTING_DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def _pipeline(make_app: Callable[..., Mesh]) -> tuple[Mesh, type[Event], type[Event]]:
    stem = unique_name("kit")

    class Opened(Event, topic=f"{stem}.opened", key="ticket_id", name="kit.Opened"):
        ticket_id: str
        text: str

    class Routed(Event, topic=f"{stem}.routed", key="ticket_id", name="kit.Routed"):
        ticket_id: str
        queue: str

    app = make_app(Opened, Routed)

    @app.agent("router", consumes=Opened, emits=Routed)
    async def router(event: Opened) -> Routed:
        queue = "billing" if "invoice" in event.text else "support"
        return Routed(ticket_id=event.ticket_id, queue=queue)

    return app, Opened, Routed


def test_mesh_run_serves_the_app_and_expect_finds_what_it_emitted(
    mesh_run, make_app: Callable[..., Mesh]
) -> None:
    app, Opened, Routed = _pipeline(make_app)
    with mesh_run(app) as running:
        running.publish(Opened(ticket_id="t1", text="my invoice"))
        running.publish(Opened(ticket_id="t2", text="login broken"))
        second = running.expect(Routed, where=lambda e: e.ticket_id == "t2", timeout=60)
        first = running.expect(Routed, timeout=60)  # the one not taken yet
    assert (second.ticket_id, second.queue) == ("t2", "support")
    assert (first.ticket_id, first.queue) == ("t1", "billing")


def test_expect_ignores_what_came_before_the_app_started_and_says_what_arrived(
    mesh_run, make_app: Callable[..., Mesh]
) -> None:
    app, Opened, Routed = _pipeline(make_app)
    with mesh_run(app) as running:
        running.publish(Opened(ticket_id="t1", text="hello"))
        running.expect(Routed, timeout=60)
    with mesh_run(app) as running:  # the same app again: t1's output is history now
        with pytest.raises(AssertionError) as failed:
            running.expect(Routed, timeout=1)
        running.publish(Opened(ticket_id="t3", text="hi"))
        assert running.expect(Routed, timeout=60).ticket_id == "t3"
        with pytest.raises(AssertionError) as none_match:
            running.expect(Routed, where=lambda e: e.ticket_id == "t9", timeout=1)
    assert str(failed.value) == ("no Routed within 1 s; arrived since the app started: nothing")
    assert str(none_match.value) == (
        "no Routed matching where= within 1 s; arrived since the app started: "
        "kit.Opened, kit.Routed"
    )


def test_mesh_run_restores_the_apps_own_settings(
    mesh_run, make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    app, _, _ = _pipeline(make_app)
    own = Settings(bootstrap_servers="127.0.0.1:1", registry_url="http://127.0.0.1:1")
    app.settings = own
    with mesh_run(app):
        assert app.settings.bootstrap_servers == mesh_settings.bootstrap_servers
    assert app.settings.bootstrap_servers == own.bootstrap_servers


# -- one handler, no broker ----------------------------------------------------------------

NOWHERE = Settings(bootstrap_servers="127.0.0.1:1", registry_url="http://127.0.0.1:1")


class Asked(Event, topic="kit.asked"):
    text: str


class Answered(Event, topic="kit.answered"):
    text: str


class Refused(Exception):
    pass


def _app() -> Mesh:
    app = Mesh("kit-unit", settings=NOWHERE)
    policy = RetryPolicy(attempts=3, initial_delay="2s", non_retryable=("Refused",))

    @app.agent("answerer", consumes=Asked, timeout="100ms", retry=policy)
    async def answerer(event: Asked, ctx: Context) -> Answered | None:
        if event.text == "refuse":
            raise Refused("no")
        if event.text == "fail":
            raise ValueError(f"attempt {ctx.attempt}")
        if event.text == "hang":
            await asyncio.sleep(10)
        ctx.emit(Answered(text="later"), delay="1m")
        return Answered(text=event.text.upper())

    return app


def test_call_agent_returns_what_the_handler_emitted() -> None:
    outcome = call_agent(_app(), "answerer", Asked(text="hi"))
    assert outcome.decision == "done"
    assert outcome.emitted == [Answered(text="later"), Answered(text="HI")]
    assert outcome.error is None


@pytest.mark.parametrize(
    ("text", "attempt", "decision", "reason", "retry_in_s", "error"),
    [
        ("fail", 1, "retry", None, 2.0, ValueError),
        ("fail", 2, "retry", None, 4.0, ValueError),
        ("fail", 3, "dead_letter", "exhausted", None, ValueError),
        ("refuse", 1, "dead_letter", "fatal", None, Refused),
        ("hang", 1, "retry", None, 2.0, TimeoutError),
    ],
)
def test_call_agent_says_whether_a_failure_is_retried_or_dead_lettered(
    text: str,
    attempt: int,
    decision: str,
    reason: str | None,
    retry_in_s: float | None,
    error: type[BaseException],
) -> None:
    outcome = call_agent(_app(), "answerer", Asked(text=text), attempt=attempt)
    assert (outcome.decision, outcome.reason, outcome.retry_in_s) == (decision, reason, retry_in_s)
    assert isinstance(outcome.error, error)
    assert outcome.emitted == []


def test_call_agent_dead_letters_a_retry_that_would_be_due_past_the_deadline() -> None:
    app = Mesh("kit-deadline", settings=NOWHERE)

    @app.agent(consumes=Asked, retry=RetryPolicy(attempts=5, initial_delay="1s", deadline="2s"))
    def slow(event: Asked) -> None:
        raise ValueError("down")

    assert call_agent(app, "slow", Asked(text="x"), attempt=1).decision == "retry"  # due at 1 s
    late = call_agent(app, "slow", Asked(text="x"), attempt=2)  # due at 1 + 2 = 3 s
    assert (late.decision, late.reason) == ("dead_letter", "deadline")


def test_call_agent_refuses_an_unknown_agent() -> None:
    with pytest.raises(ValueError, match="app 'kit-unit' has no agent 'nope'; its agents are: "):
        call_agent(_app(), "nope", Asked(text="x"))


# -- the documented example (docs/testing.md), as a user would run it ----------------------


def test_the_documented_testing_example_passes_as_written(
    tmp_path: Path, mesh_bootstrap_servers: str, mesh_registry_url: str
) -> None:
    section = TESTING_DOC.read_text().split("\n## Testing your agents\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n# (\S+\.py)\n(.*?)```", section, re.DOTALL)
    assert [name for name, _ in blocks] == ["helpdesk.py", "test_helpdesk.py"]
    for name, code in blocks:
        (tmp_path / name).write_text(code)
    env = mesh_env(
        MESH_BOOTSTRAP_SERVERS=mesh_bootstrap_servers,
        MESH_REGISTRY_URL=mesh_registry_url,
        PYTHONPATH=str(tmp_path),
    )
    commands = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert commands == ["mesh schema gen --module helpdesk\npytest\n"]
    gen = subprocess.run(
        [sys.executable, "-m", "mesh", "schema", "gen", "--module", "helpdesk"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
