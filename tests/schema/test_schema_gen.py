"""``schemas/``: generating the .avsc files from models, detecting drift, ``mesh schema gen``."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mesh.cli import app
from mesh.errors import SchemaError
from mesh.event import Event
from mesh.schema.files import (
    diff_schemas,
    find_event_types,
    generate_schemas,
    render_schema,
    schema_path,
    verify_schema,
)

EVENTS = '''
from datetime import datetime
from pydantic import BaseModel, Field
from mesh.event import Event


class Step(BaseModel):
    title: str


class TaskCreated(Event, name="acme.tasks.TaskCreated", key="task_id"):
    """A user asked for a task."""

    task_id: str
    prompt: str
    """What to do."""
    created_at: datetime
    priority: int = 1
    steps: list[Step] = []


class PlanReady(Event, name="acme.tasks.PlanReady"):
    task_id: str
'''


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A project directory with an importable package of events, as the working directory."""
    package = f"proj_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "events.py").write_text(EVENTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield package
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[name]


def _types(package: str) -> dict[str, type[Event]]:
    return {t.__name__: t for t in find_event_types([f"{package}.events"])}


def test_the_file_is_pretty_json_named_after_the_event_type(project: str) -> None:
    task = _types(project)["TaskCreated"]
    assert schema_path(task) == Path("schemas/acme.tasks.TaskCreated.avsc")
    text = render_schema(task)
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
    assert list(json.loads(text)) == ["type", "name", "namespace", "doc", "fields"]
    assert render_schema(task) == text


def test_event_types_are_found_in_modules_and_packages(project: str) -> None:
    assert sorted(_types(project)) == ["PlanReady", "TaskCreated"]
    assert [t.__name__ for t in find_event_types([project])] == ["PlanReady", "TaskCreated"]


def test_a_module_that_cannot_be_imported_is_reported(project: str) -> None:
    with pytest.raises(SchemaError, match="cannot import module 'nowhere_at_all'"):
        find_event_types(["nowhere_at_all"])


def test_two_classes_declaring_one_event_type_are_refused(project: str, tmp_path: Path) -> None:
    (tmp_path / project / "copy.py").write_text(
        "from mesh.event import Event\n\n\n"
        'class Again(Event, name="acme.tasks.PlanReady"):\n    task_id: str\n'
    )
    with pytest.raises(SchemaError, match=r"acme\.tasks\.PlanReady is declared twice"):
        find_event_types([project])


def test_gen_writes_then_leaves_files_alone(project: str) -> None:
    types = list(_types(project).values())
    first = generate_schemas(types)
    assert [(r.path.name, r.state) for r in first] == [
        ("acme.tasks.PlanReady.avsc", "created"),
        ("acme.tasks.TaskCreated.avsc", "created"),
    ]
    for result in first:
        assert result.path.read_text() == render_schema(result.event_type)
    assert {r.state for r in generate_schemas(types)} == {"unchanged"}


def test_gen_updates_a_stale_file_and_says_what_changed(project: str) -> None:
    task = _types(project)["TaskCreated"]
    path = schema_path(task)
    _write_edited(task, path, lambda s: s["fields"].pop())
    (result,) = generate_schemas([task])
    assert result.state == "updated"
    assert result.differences == ("field 'steps': in the model, missing from the .avsc",)
    assert path.read_text() == render_schema(task)


def test_check_reports_missing_and_drifted_files_without_writing(project: str) -> None:
    types = _types(project)
    plan_path = schema_path(types["PlanReady"])
    _write_edited(types["PlanReady"], plan_path, lambda s: s.update(doc="old words"))
    before = plan_path.read_text()
    results = generate_schemas(types.values(), check=True)
    assert [(r.path.name, r.state, r.differences) for r in results] == [
        (
            "acme.tasks.PlanReady.avsc",
            "drifted",
            ('record: doc differs: model (none), .avsc "old words"',),
        ),
        ("acme.tasks.TaskCreated.avsc", "missing", ()),
    ]
    assert not schema_path(types["TaskCreated"]).exists()
    assert plan_path.read_text() == before


def test_check_ignores_formatting(project: str) -> None:
    task = _types(project)["TaskCreated"]
    path = schema_path(task)
    path.parent.mkdir()
    path.write_text(json.dumps(task.avro_schema()))  # one line, no trailing newline
    assert generate_schemas([task], check=True)[0].state == "unchanged"
    verify_schema(task)


def test_verify_accepts_a_matching_file(project: str) -> None:
    types = list(_types(project).values())
    generate_schemas(types)
    for event_type in types:
        verify_schema(event_type)


def test_verify_names_a_missing_file_and_the_fix(project: str) -> None:
    task = _types(project)["TaskCreated"]
    with pytest.raises(SchemaError) as info:
        verify_schema(task, Path("schemas"))
    assert str(info.value) == (
        "schemas/acme.tasks.TaskCreated.avsc is missing for event type acme.tasks.TaskCreated "
        f"({project}.events.TaskCreated); run `mesh schema gen --module {project}.events` "
        "and review the change"
    )


def test_verify_lists_every_difference(project: str) -> None:
    task = _types(project)["TaskCreated"]
    path = schema_path(task)

    def edit(schema: dict) -> None:
        fields = schema["fields"]
        fields[1]["type"] = ["null", "string"]  # prompt
        del fields[1]["doc"]
        fields[3]["default"] = 2  # priority
        del fields[2]  # created_at
        fields.append({"name": "legacy", "type": "string"})
        fields[3]["type"]["items"]["fields"][0]["type"] = "bytes"  # steps.title

    _write_edited(task, path, edit)
    with pytest.raises(SchemaError) as info:
        verify_schema(task)
    assert str(info.value) == textwrap.dedent(
        f"""\
        schemas/acme.tasks.TaskCreated.avsc does not match event type acme.tasks.TaskCreated \
({project}.events.TaskCreated):
          - field 'created_at': in the model, missing from the .avsc
          - field 'legacy': in the .avsc, not in the model
          - field 'priority': default differs: model 1, .avsc 2
          - field 'prompt': doc differs: model "What to do.", .avsc (none)
          - field 'prompt': type differs: model "string", .avsc ["null","string"]
          - field 'steps[].title': type differs: model "string", .avsc "bytes"
        The model is the source of truth: run `mesh schema gen --module {project}.events` \
and review the change."""
    )


def test_nested_record_differences_name_the_field_path() -> None:
    inner = {"type": "record", "name": "Step", "fields": [{"name": "title", "type": "string"}]}
    model = {"type": "record", "name": "Plan", "fields": [{"name": "step", "type": inner}]}
    avsc = json.loads(json.dumps(model))
    avsc["fields"][0]["type"]["fields"][0]["type"] = "bytes"
    avsc["fields"][0]["type"]["fields"].append({"name": "x", "type": "long", "default": 0})
    assert diff_schemas(model, avsc) == [
        'field \'step.title\': type differs: model "string", .avsc "bytes"',
        "field 'step.x': in the .avsc, not in the model",
    ]


def test_differences_inside_unions_and_maps_name_the_path() -> None:
    inner = {"type": "record", "name": "Step", "fields": [{"name": "title", "type": "string"}]}
    model = {
        "type": "record",
        "name": "Plan",
        "fields": [
            {"name": "first", "type": ["null", inner], "default": None},
            {"name": "by_name", "type": {"type": "map", "values": inner}},
        ],
    }
    avsc = json.loads(json.dumps(model))
    avsc["fields"][0]["type"][1]["fields"][0]["type"] = "bytes"
    avsc["fields"][1]["type"]["values"] = "long"
    assert diff_schemas(model, avsc) == [
        "field 'by_name{}': type differs: model "
        '{"type":"record","name":"Step","fields":[{"name":"title","type":"string"}]}, .avsc "long"',
        'field \'first.title\': type differs: model "string", .avsc "bytes"',
    ]
    avsc["fields"][0]["type"] = [inner, "null"]
    assert diff_schemas(model, avsc)[1].startswith("field 'first': type differs: model [\"null\"")


def test_field_order_and_default_presence_are_drift() -> None:
    a = {"name": "a", "type": "long"}
    b = {"name": "b", "type": ["null", "long"], "default": None}
    model = {"type": "record", "name": "R", "fields": [a, b]}
    assert diff_schemas(model, {**model, "fields": [b, a]}) == [
        "record: field order differs (it changes the binary encoding): "
        "model ['a', 'b'], .avsc ['b', 'a']"
    ]
    assert diff_schemas(model, {**model, "fields": [a, {**b, "default": 0}]}) == [
        "field 'b': default differs: model null, .avsc 0"
    ]
    assert diff_schemas(model, {**model, "fields": [a, {"name": "b", "type": b["type"]}]}) == [
        "field 'b': default differs: model null, .avsc (none)"
    ]
    assert diff_schemas(model, {**model, "namespace": "acme"}) == [
        'record: namespace differs: model (none), .avsc "acme"'
    ]


def test_an_unparseable_file_is_drift_with_its_line(project: str) -> None:
    task = _types(project)["TaskCreated"]
    path = schema_path(task)
    path.parent.mkdir()
    path.write_text('{\n  "type": "record",\n  oops\n}\n')
    with pytest.raises(SchemaError, match=r"not valid JSON \(line 3, column 3: Expecting"):
        verify_schema(task)


def test_cli_gen_writes_and_check_fails_on_drift(project: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["schema", "gen", "--module", f"{project}.events"])
    assert result.exit_code == 0, result.output
    assert "created   schemas/acme.tasks.TaskCreated.avsc" in result.output
    assert Path("schemas/acme.tasks.PlanReady.avsc").is_file()

    result = runner.invoke(app, ["schema", "gen", "--module", f"{project}.events", "--check"])
    assert result.exit_code == 0, result.output
    assert "unchanged schemas/acme.tasks.PlanReady.avsc" in result.output

    Path("schemas/acme.tasks.PlanReady.avsc").unlink()
    result = runner.invoke(app, ["schema", "gen", "-m", f"{project}.events", "--check"])
    assert result.exit_code == 1
    assert "missing   schemas/acme.tasks.PlanReady.avsc" in result.output
    assert (
        f"1 schema file(s) out of date: run `mesh schema gen --module {project}.events`"
        in result.output
    )
    assert not Path("schemas/acme.tasks.PlanReady.avsc").exists()


def test_cli_gen_lists_differences(project: str) -> None:
    task = _types(project)["TaskCreated"]
    _write_edited(task, schema_path(task), lambda s: s["fields"].pop(0))
    result = CliRunner().invoke(app, ["schema", "gen", "-m", project, "--check"])
    assert result.exit_code == 1
    assert "drifted   schemas/acme.tasks.TaskCreated.avsc" in result.output
    assert "- field 'task_id': in the model, missing from the .avsc" in result.output


def test_cli_gen_reports_modules_without_events(project: str, tmp_path: Path) -> None:
    (tmp_path / project / "empty.py").write_text("X = 1\n")
    result = CliRunner().invoke(app, ["schema", "gen", "-m", f"{project}.empty"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SchemaError)
    assert "no event types (subclasses of mesh.Event)" in str(result.exception)


def _write_edited(event_type: type[Event], path: Path, edit: Callable[[Any], Any]) -> None:
    schema = json.loads(json.dumps(event_type.avro_schema()))
    edit(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=2) + "\n")
