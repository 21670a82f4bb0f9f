"""`mesh dlq` on dead letters made by a real app with failing handlers (real broker, registry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Message, Producer
from typer.testing import CliRunner, Result

import mesh.cli
from mesh import Event, Mesh, Settings
from mesh.envelope import Envelope
from mesh.headers import FAILURE_HEADERS
from mesh.kafka.reader import Tail
from mesh.testing import unique_name
from tests.support import header, read_topic, running


class AuditFailed(Exception):
    """A non-builtin error class, to filter on by its qualified name's tail."""


@dataclass
class Scenario:
    """An app whose agents fail on the keys in ``broken``, importable as ``spec``."""

    app: Mesh
    spec: str
    tasks: type[Event]
    plans: type[Event]
    roots: dict[str, Envelope] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    def dlq(self, agent: str) -> str:
        return f"{self.tasks.topic()}.{self.app.group_id(agent)}.dlq"


@pytest.fixture
def scenario(make_app: Callable[..., Mesh], mesh_settings: Settings) -> Iterator[Scenario]:
    """Dead letters: planner fails t1, t2 (ValueError), auditor t1 (AuditFailed); a poison pill."""
    stem = unique_name("dlq")

    class TaskCreated(Event, topic=f"{stem}.tasks", key="task_id", name="test.TaskCreated"):
        task_id: str
        prompt: str

    class PlanReady(Event, topic=f"{stem}.plans", key="task_id", name="test.PlanReady"):
        task_id: str
        steps: list[str]

    app = make_app(TaskCreated, PlanReady)
    module = types.ModuleType(stem.replace("-", "_"))
    module.app = app  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    found = Scenario(app, f"{module.__name__}:app", TaskCreated, PlanReady, broken={"t1", "t2"})

    @app.agent("planner", consumes=TaskCreated)
    async def planner(event: TaskCreated) -> PlanReady:
        if event.task_id in found.broken:
            raise ValueError(f"cannot plan {event.task_id}")
        return PlanReady(task_id=event.task_id, steps=[event.prompt])

    @app.agent("auditor", consumes=TaskCreated)
    async def auditor(event: TaskCreated) -> None:
        if event.task_id == "t1" and event.task_id in found.broken:
            raise AuditFailed("audit trail missing")

    with running(app):
        for task_id in ("t1", "t2"):
            found.roots[task_id] = app.publish(TaskCreated(task_id=task_id, prompt=f"p-{task_id}"))
        raw = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        raw.produce(TaskCreated.topic(), b"\x07not avro", b"poison")
        raw.flush(10)
        read_topic(mesh_settings.bootstrap_servers, found.dlq("planner"), 3, partitions=3)
        read_topic(mesh_settings.bootstrap_servers, found.dlq("auditor"), 2, partitions=3)
    try:
        yield found
    finally:
        del sys.modules[module.__name__]


@pytest.fixture
def cli(mesh_settings: Settings) -> Callable[..., Result]:
    """``mesh ARGS`` in this process (the scenario's app is importable here only)."""
    runner = CliRunner()
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }

    def run(*args: str, **more_env: str) -> Result:
        result = runner.invoke(mesh.cli.app, list(args), env={**env, **more_env})
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def _listed(cli: Callable[..., Result], *args: str) -> list[dict]:
    return [json.loads(line) for line in cli("dlq", "list", "--json", *args).stdout.splitlines()]


def _records(settings: Settings, topic: str) -> list[Message]:
    with Tail(settings, topic, from_beginning=True, to_end=True) as reader:
        return list(reader.messages())


def test_list_filters_and_show(scenario: Scenario, cli: Callable[..., Result]) -> None:
    spec = scenario.spec
    listed = _listed(cli, "--app", spec)
    assert len(listed) == 5
    assert {(r["agent"], r["reason"], r["error_kind"]) for r in listed} == {
        ("planner", "exhausted", "transient"),
        ("planner", "deserialization", "deserialization"),
        ("auditor", "exhausted", "transient"),
        ("auditor", "deserialization", "deserialization"),
    }
    one = next(r for r in listed if r["agent"] == "planner" and r["error_message"].endswith("t1"))
    assert one["id"] == f"{one['dlq_topic']}:{one['dlq_partition']}:{one['dlq_offset']}"
    assert one["dlq_topic"] == scenario.dlq("planner")
    assert one["group"] == scenario.app.group_id("planner")
    assert one["original_topic"] == scenario.tasks.topic()
    assert one["original_partition"] == one["dlq_partition"]
    assert isinstance(one["original_offset"], int)
    assert one["attempts"] == scenario.app.retry_policy("planner").attempts
    assert (one["error_class"], one["error_message"]) == ("ValueError", "cannot plan t1")
    assert one["correlation_id"] == scenario.roots["t1"].correlation_id
    assert one["event_type"] == "test.TaskCreated"
    assert one["redrive_count"] == 0
    assert (
        one["original_timestamp_ms"]
        <= one["first_failure_ms"]
        <= one["failed_at_ms"]
        <= time.time() * 1000
    )
    assert one["first_failure"].startswith(time.strftime("%Y-", time.gmtime()))
    assert one["failed_at"].startswith(time.strftime("%Y-", time.gmtime()))

    auditor = _listed(cli, "--app", spec, "--agent", "auditor")
    assert {r["dlq_topic"] for r in auditor} == {scenario.dlq("auditor")}
    assert len(auditor) == 2
    by_tail = _listed(cli, "--app", spec, "--error-class", "AuditFailed")
    by_name = _listed(cli, "--app", spec, "--error-class", f"{__name__}.AuditFailed")
    assert [r["id"] for r in by_tail] == [r["id"] for r in by_name]
    assert [r["error_message"] for r in by_tail] == ["audit trail missing"]
    assert len(_listed(cli, "--app", spec, "--error-class", "Failed")) == 0  # a dotted tail only
    assert len(_listed(cli, "--topic", scenario.dlq("planner"), "--since", "1h")) == 3
    time.sleep(0.3)
    assert _listed(cli, "--app", spec, "--since", "200ms") == []
    assert len(_listed(cli, "--app", spec, "--limit", "2")) == 2
    poisons = _listed(cli, "--app", spec, "--reason", "deserialization")
    assert sorted(r["agent"] for r in poisons) == ["auditor", "planner"]
    assert {r["error_class"] for r in poisons} == {"mesh.errors.DeserializationError"}
    assert _listed(cli, "--app", spec, "--reason", "fatal") == []

    table = cli("dlq", "list", "--app", spec, "--agent", "planner").stdout
    assert one["id"] in table
    assert "cannot plan t1" in table
    row = next(line for line in table.splitlines() if one["id"] in line)
    assert one["correlation_id"] in row  # piped: a row per line, never cut to a width

    # At 80 columns nothing a user acts on is cut: ids whole, errors and correlation ids.
    narrow = cli("dlq", "list", "--app", spec, COLUMNS="80").stdout
    lines = narrow.splitlines()
    assert lines == [line.rstrip() for line in lines]  # no padding to the width
    assert max(len(line) for line in lines) <= 80, narrow
    starts = {line.split()[0] for line in lines if line.strip()}
    assert {r["id"] for r in listed} <= starts, narrow
    for r in listed:
        assert f"correlation {r['correlation_id'] or '-'}" in narrow
    assert "ValueError: cannot plan t1" in narrow
    assert "ValueError: cannot plan t2" in narrow
    assert "AuditFailed: audit trail missing" in narrow

    shown = cli("dlq", "show", one["id"]).stdout
    assert "Traceback (most recent call last)" in shown
    assert "ValueError: cannot plan t1" in shown
    assert '"prompt": "p-t1"' in shown
    poison = next(r for r in listed if r["error_kind"] == "deserialization")
    detail = json.loads(cli("dlq", "show", poison["id"], "--json").stdout)
    assert detail["value"] is None
    assert "value_error" in detail
    assert detail["value_base64"] == "B25vdCBhdnJv"  # b"\x07not avro"
    assert detail["key"] == "poison"
    assert detail["headers"]["mesh.error.kind"] == "deserialization"
    assert detail["headers"]["mesh.dlq.reason"] == "deserialization"


def test_redrive_after_fix_processes_dead_letters(
    scenario: Scenario, cli: Callable[..., Result], mesh_settings: Settings
) -> None:
    spec, tasks = scenario.spec, scenario.tasks.topic()
    selection = ("--app", spec, "--agent", "planner", "--error-class", "ValueError")
    before = len(_records(mesh_settings, tasks))

    dry = cli("dlq", "redrive", *selection).stdout
    assert dry.count("would send") == 3  # two lines and the summary
    assert "matched 2, would send 2, skipped 0" in dry
    assert len(_records(mesh_settings, tasks)) == before

    scenario.broken = {"t2"}  # "fix" the handler for t1 only
    with running(scenario.app):
        sent = cli("dlq", "redrive", *selection, "--execute").stdout
        assert "matched 2, sent 2, skipped 0" in sent
        plans = read_topic(mesh_settings.bootstrap_servers, scenario.plans.topic(), 1, partitions=3)
        read_topic(mesh_settings.bootstrap_servers, scenario.dlq("planner"), 4, partitions=3)

    assert [m.key() for m in plans] == [b"t1"]
    redriven = [m for m in _records(mesh_settings, tasks) if header(m, "mesh.redrive-count")]
    assert sorted(m.key() for m in redriven) == [b"t1", b"t2"]
    dead = {m.key(): m for m in _records(mesh_settings, scenario.dlq("planner"))}
    for msg in redriven:
        assert header(msg, "mesh.redrive-count") == "1"
        assert not any(k in FAILURE_HEADERS for k, _ in msg.headers() or [])
        assert (
            header(msg, "mesh.correlation-id") == scenario.roots[msg.key().decode()].correlation_id
        )
        assert msg.value() == dead[msg.key()].value()  # byte for byte

    again = [r for r in _listed(cli, *selection) if r["redrive_count"] == 1]
    assert [r["error_message"] for r in again] == ["cannot plan t2"]
    capped = cli("dlq", "redrive", *selection, "--max-redrives", "1").stdout
    assert f"skipped {again[0]['id']}: already redriven 1 times" in capped
    assert "matched 3, would send 0, skipped 3" in capped  # the first two are marked
    forced = cli("dlq", "redrive", *selection, "--max-redrives", "1", "--force").stdout
    assert "matched 3, would send 2, skipped 1" in forced


def test_redrive_by_id_marks_the_letter_and_a_second_redrive_needs_force(
    scenario: Scenario, cli: Callable[..., Result], mesh_settings: Settings
) -> None:
    listed = _listed(cli, "--app", scenario.spec, "--agent", "planner")
    one = next(r for r in listed if r["error_message"] == "cannot plan t1")
    assert (one["redriven_at"], one["redriven_to"]) == (None, None)
    tasks = scenario.tasks.topic()
    before = len(_records(mesh_settings, tasks))

    sent = cli("dlq", "redrive", one["id"], "--execute")
    assert f"sent {one['id']} -> {tasks} (redrive 1)" in sent.stdout
    assert "matched 1, sent 1, skipped 0" in sent.stdout
    after = _records(mesh_settings, tasks)
    assert len(after) == before + 1
    assert after[-1].key() == b"t1"

    marked = {r["id"]: r for r in _listed(cli, "--app", scenario.spec, "--agent", "planner")}
    assert marked[one["id"]]["redriven_to"] == tasks
    assert marked[one["id"]]["redriven_at"].startswith(time.strftime("%Y-", time.gmtime()))
    assert [i for i, r in marked.items() if r["redriven_at"]] == [one["id"]]
    table = cli("dlq", "list", "--app", scenario.spec, "--agent", "planner").stdout
    assert f"to {tasks}" in table

    again = cli("dlq", "redrive", one["id"], "--execute")
    assert f"warning: {one['id']} was redriven before" in again.output
    assert "not sent again without --force" in again.output
    assert "matched 1, sent 0, skipped 1" in again.stdout
    assert len(_records(mesh_settings, tasks)) == before + 1

    forced = cli("dlq", "redrive", one["id"], "--execute", "--force")
    assert "matched 1, sent 1, skipped 0" in forced.stdout
    assert len(_records(mesh_settings, tasks)) == before + 2


def test_redrive_to_topic_sends_elsewhere_than_the_original_topic(
    scenario: Scenario,
    cli: Callable[..., Result],
    mesh_settings: Settings,
    mesh_topic: Callable[..., str],
) -> None:
    elsewhere = mesh_topic()
    listed = _listed(cli, "--app", scenario.spec, "--agent", "auditor")
    one = next(r for r in listed if r["error_message"] == "audit trail missing")
    sent = cli("dlq", "redrive", one["id"], "--to-topic", elsewhere, "--execute")
    assert f"sent {one['id']} -> {elsewhere}" in sent.stdout
    [copy] = _records(mesh_settings, elsewhere)
    assert (copy.key(), header(copy, "mesh.redrive-count")) == (b"t1", "1")
    shown = json.loads(cli("dlq", "show", one["id"], "--json").stdout)
    assert shown["redriven_to"] == elsewhere


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--topic", "no-such-topic.dlq"],
        ["list", "--app", "no_such_module:app"],
        ["list", "--topic", "x", "--since", "soon"],
        ["list", "--topic", "x", "--reason", "bored"],
        ["show", "not-an-id"],
        ["redrive"],
        ["redrive", "not-an-id"],
        ["redrive", "x.dlq:0:0", "--agent", "planner"],
        ["redrive", "--topic", "x", "--to-topic", "no-such-topic"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], mesh_settings: Settings) -> None:
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    env.pop("MESH_APP", None)
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "dlq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
