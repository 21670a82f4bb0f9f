"""`mesh trace`: a chain rebuilt from Kafka alone, with the retries and dead letter the real
runtime wrote for it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

import mesh.cli
import mesh.ops.trace
from mesh import Context, Event, Mesh, Settings
from mesh import headers as h
from mesh.config import RetryPolicy
from mesh.envelope import Envelope
from mesh.kafka.topics import existing_topics
from mesh.ops.trace import Step, Trace, app_topics, trace
from mesh.testing import unique_name
from tests.support import read_topic, running


class AuditRejected(Exception):
    """Raised on every attempt."""


def test_trace_of_a_four_step_chain_with_a_retry_and_a_dead_letter(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    stem = unique_name("trace")

    class Requested(Event, topic=f"{stem}.requested", key="rid", name="test.trace.Requested"):
        rid: str

    class Planned(Event, topic=f"{stem}.planned", key="rid", name="test.trace.Planned"):
        rid: str

    class Drafted(Event, topic=f"{stem}.drafted", key="rid", name="test.trace.Drafted"):
        rid: str

    class Reviewed(Event, topic=f"{stem}.reviewed", key="rid", name="test.trace.Reviewed"):
        rid: str

    app = make_app(Requested, Planned, Drafted, Reviewed)
    quick = {"backoff": "fixed", "initial_delay": "200ms"}

    @app.agent("planner", consumes=Requested)
    async def planner(event: Requested) -> Planned:
        return Planned(rid=event.rid)

    @app.agent("writer", consumes=Planned, retry=RetryPolicy(attempts=3, **quick))
    async def writer(event: Planned, ctx: Context) -> Drafted:
        if ctx.attempt == 1:
            raise ConnectionError("model busy")
        return Drafted(rid=event.rid)

    @app.agent("reviewer", consumes=Drafted)
    async def reviewer(event: Drafted) -> Reviewed:
        return Reviewed(rid=event.rid)

    @app.agent("auditor", consumes=Reviewed, retry=RetryPolicy(attempts=2, **quick))
    async def auditor(event: Reviewed) -> None:
        raise AuditRejected(f"no sources for {event.rid}")

    with running(app):
        chain = app.publish(Requested(rid="r1"))
        other = app.publish(Requested(rid="r2"))  # a second chain, not to be shown
        dlq = f"{Reviewed.topic()}.{app.group_id('auditor')}.dlq"
        read_topic(mesh_settings.bootstrap_servers, dlq, 2, partitions=3)

    runner = CliRunner()
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    args = ["trace", chain.correlation_id, "--topic", f"{stem}.*", "--since", "1h"]
    result = runner.invoke(mesh.cli.app, [*args, "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    found = json.loads(result.stdout)
    assert found["correlation_id"] == chain.correlation_id
    assert found["steps"] == 4
    (root,) = found["roots"]

    def only_child(step: dict) -> dict:
        (child,) = step["children"]
        assert child["causation_id"] == step["event_id"]
        assert child["latency_ms"] == child["timestamp"] - step["timestamp"] >= 0
        return child

    assert (root["event_id"], root["event_type"], root["produced_by"]) == (
        chain.event_id,
        "test.trace.Requested",
        app.name,
    )
    assert root["failures"] == []
    planned = only_child(root)
    assert (planned["event_type"], planned["produced_by"]) == ("test.trace.Planned", "planner")
    (retry,) = planned["failures"]  # the writer failed once on it
    assert (retry["kind"], retry["attempt"], retry["group"]) == ("retry", 1, app.group_id("writer"))
    assert (retry["error_class"], retry["error_message"]) == ("ConnectionError", "model busy")
    drafted = only_child(planned)
    assert (drafted["event_type"], drafted["produced_by"]) == ("test.trace.Drafted", "writer")
    assert drafted["failures"] == []
    reviewed = only_child(drafted)
    assert (reviewed["event_type"], reviewed["produced_by"]) == ("test.trace.Reviewed", "reviewer")
    assert reviewed["children"] == []
    first, last = reviewed["failures"]  # the auditor: one retry, then the dead letter
    error_class = f"{__name__}.AuditRejected"
    assert (first["kind"], first["attempt"], first["error_class"]) == ("retry", 1, error_class)
    assert (last["kind"], last["attempt"], last["error_class"]) == ("dead-letter", 2, error_class)
    assert (last["reason"], last["topic"], last["agent"]) == ("exhausted", dlq, "auditor")
    assert last["error_message"] == "no sources for r1"

    shown = runner.invoke(mesh.cli.app, args, env={**env, "COLUMNS": "250"})
    assert shown.exit_code == 0, (shown.output, shown.exception)
    lines = shown.stdout.splitlines()
    assert lines[0] == f"chain {chain.correlation_id}"
    text = shown.stdout
    order = [
        "test.trace.Requested by " + app.name,
        "retry " + app.group_id("writer") + " attempt 1 failed",
        "test.trace.Planned by planner",
        "test.trace.Drafted by writer",
        "test.trace.Reviewed by reviewer",
        "retry " + app.group_id("auditor") + " attempt 1 failed",
        "dead letter auditor (exhausted, after 2 attempt(s))",
    ]
    assert all(part in text for part in order), text
    assert "ConnectionError: model busy" in text
    assert f"{error_class}: no sources for r1" in text
    assert other.event_id not in text
    assert "4 event(s)" in shown.stderr


def test_trace_with_an_app_searches_only_its_topics_and_says_what_it_searches(
    make_app: Callable[..., Mesh],
    mesh_settings: Settings,
    mesh_admin: AdminClient,
    mesh_topic: Callable[..., str],
) -> None:
    stem = unique_name("scope")

    class Asked(Event, topic=f"{stem}.asked", key="rid", name="test.scope.Asked"):
        rid: str

    class Answered(Event, topic=f"{stem}.answered", key="rid", name="test.scope.Answered"):
        rid: str

    app = make_app(Asked, Answered)

    # emits named: a return annotation of a class local to a test cannot be resolved
    @app.agent("answerer", consumes=Asked, emits=Answered)
    async def answerer(event: Asked) -> Answered:
        return Answered(rid=event.rid)

    with running(app):
        chain = app.publish(Asked(rid="r1"))
        read_topic(mesh_settings.bootstrap_servers, Answered.topic(), 1, partitions=3)
    # Another team's topic holding a record that carries the same correlation id.
    foreign = mesh_topic()
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    producer.produce(
        foreign,
        b"{}",
        headers=[(h.CORRELATION_ID, chain.correlation_id.encode()), (h.EVENT_ID, b"foreign")],
    )
    assert producer.flush(10) == 0

    def topics_of(found: Trace) -> set[str]:
        def walk(step: Step) -> list[str]:
            return [step.topic, *(t for c in step.children for t in walk(c))]

        return {t for root in found.roots for t in walk(root)}

    own = trace(app.settings, chain.correlation_id, since_s=3600, app=app)
    assert topics_of(own) == {Asked.topic(), Answered.topic()}
    assert own.topics == len(app_topics(app) & set(existing_topics(mesh_admin)))
    named = trace(app.settings, chain.correlation_id, since_s=3600, topics=[foreign])
    assert topics_of(named) == {foreign}
    everywhere = trace(app.settings, chain.correlation_id, since_s=3600)
    assert topics_of(everywhere) == {Asked.topic(), Answered.topic(), foreign}

    help_text = CliRunner().invoke(mesh.cli.app, ["trace", "--help"]).stdout
    assert "every topic on the cluster" in " ".join(help_text.split())


Headers = tuple[tuple[str, bytes], ...]


def _uuid7(ms: int) -> str:
    """A UUIDv7 minted at *ms* (epoch milliseconds), as mesh mints event ids."""
    stamp, tail = f"{ms:012x}", uuid.uuid4().hex
    return f"{stamp[:8]}-{stamp[8:]}-7{tail[:3]}-8{tail[3:6]}-{tail[6:18]}"


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "read-again"])
def test_trace_by_an_event_id_finds_the_whole_chain_of_that_event(
    mesh_settings: Settings,
    mesh_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    kept: bool,
) -> None:
    """Two chains: one named from outside (a request id), one by its first event's UUIDv7,
    whose first event was produced 30 minutes before the one asked for, earlier than a
    search from the asked event's own time would read. The records read before the asked
    event are kept for its chain, or (too many to keep) read again by a second pass."""
    if not kept:
        monkeypatch.setattr(mesh.ops.trace, "_HELD_RECORDS", 0)
    topic, dlq = mesh_topic(partitions=3), mesh_topic(partitions=1)
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    now_ms = int(time.time() * 1000)

    def produce(envelope: Envelope, at_ms: int, target: str = topic, extra: Headers = ()) -> None:
        producer.produce(
            target, b"{}", envelope.event_id.encode(), headers=envelope.to_headers() + list(extra),
            timestamp=at_ms,
        )  # fmt: skip

    for n in range(300):  # noise: other chains
        produce(Envelope.new_chain("test.Noise", "noise"), now_ms - 3_600_000 + n * 1000)
    request = unique_name("request")
    asked = Envelope.new_chain("test.Asked", "front", correlation_id=request)
    planned = asked.child("test.Planned", "planner")
    drafted = planned.child("test.Drafted", "writer")
    for n, step in enumerate((asked, planned, drafted)):
        produce(step, now_ms - 60_000 + n * 10)
    dead = ((h.ATTEMPT, b"1"), (h.EXCEPTION_CLASS, b"ValueError"), (h.DLQ_REASON, b"fatal"))
    produce(drafted, now_ms - 59_000, dlq, dead)

    old = Envelope.new_chain("test.Asked", "front")._replace(event_id=_uuid7(now_ms - 1_800_000))
    old = old._replace(correlation_id=old.event_id)
    later = old.child("test.Planned", "planner")
    produce(old, now_ms - 1_800_000)
    produce(later, now_ms - 1_000)
    assert producer.flush(10) == 0

    patterns = [topic, dlq]
    by_correlation = trace(mesh_settings, request, since_s=7200, topics=patterns)
    assert (by_correlation.correlation_id, by_correlation.event_id) == (request, None)
    assert by_correlation.steps == 3

    by_event = trace(mesh_settings, drafted.event_id, since_s=7200, topics=patterns)
    assert (by_event.correlation_id, by_event.event_id) == (request, drafted.event_id)
    assert by_event.steps == 3
    (root,) = by_event.roots
    assert root.event_id == asked.event_id
    (failure,) = root.children[0].children[0].failures
    assert (failure.kind, failure.topic) == ("dead-letter", dlq)
    # every record read once (those read before the asked event kept), or some again
    if kept:
        assert by_event.scanned == by_correlation.scanned
    else:
        assert by_event.scanned >= by_correlation.scanned

    from_later = trace(mesh_settings, later.event_id, since_s=7200, topics=patterns)
    assert (from_later.correlation_id, from_later.event_id) == (old.event_id, later.event_id)
    assert from_later.steps == 2
    (root,) = from_later.roots
    assert [root.event_id, root.children[0].event_id] == [old.event_id, later.event_id]

    nothing = trace(mesh_settings, _uuid7(now_ms), since_s=7200, topics=patterns)
    assert (nothing.roots, nothing.event_id) == ([], None)

    runner = CliRunner()
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
        "COLUMNS": "250",
    }
    args = ["trace", planned.event_id, "--topic", topic, "--topic", dlq, "--since", "2h"]
    shown = runner.invoke(mesh.cli.app, args, env=env)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert shown.stdout.splitlines()[0] == f"chain {request} (found by event {planned.event_id})"
    assert "test.Drafted by writer" in shown.stdout
    as_json = json.loads(runner.invoke(mesh.cli.app, [*args, "--json"], env=env).stdout)
    assert (as_json["correlation_id"], as_json["event_id"]) == (request, planned.event_id)
