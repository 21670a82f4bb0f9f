"""``mesh schema check`` against git: each level's compatible and breaking changes in a
temporary repository, deleted and new schemas, exit codes, JSON and markdown output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mesh.schema.check import Levels, Naming, check_against_git, default_ref
from mesh.schema.compatibility import CompatibilityLevel
from mesh.serde import SubjectStrategy

ID = {"name": "id", "type": "string"}
NOTE = {"name": "note", "type": "string"}
V1 = [ID, NOTE]
CHANGES: dict[str, list[dict[str, Any]]] = {
    "add-with-default": [ID, NOTE, {"name": "n", "type": "int", "default": 0}],
    "add-required": [ID, NOTE, {"name": "n", "type": "int"}],  # old data lacks n
    "remove-required": [ID],  # old readers need note
}
#: The topic of each event type, as the app under test declares them (see APP).
TOPICS = {"acme.Order": "orders", "acme.Item": "items", "acme.Fresh": "fresh", "acme.Gone": "gone"}
NAMING = Naming(SubjectStrategy.TOPIC_NAME, TOPICS)
#: The app of the repository under test, declared in its mesh.toml.
APP = """
from mesh import Event, Mesh

class Order(Event, topic="orders", name="acme.Order"):
    id: str

class Item(Event, topic="items", name="acme.Item"):
    id: str

app = Mesh("shop")

@app.agent("packer", consumes=[Order, Item])
async def packer(event: Order | Item) -> None:
    pass
"""
# Each step FULL-compatible with the one before, but the last is neither BACKWARD- nor
# FORWARD-compatible with the first: b goes from int to string.
CHAIN = [
    [ID, {"name": "b", "type": "int", "default": 0}],
    [ID],
    [ID, {"name": "b", "type": "string", "default": "x"}],
]


def avsc(fields: list[dict[str, Any]], name: str = "Order") -> str:
    schema = {"type": "record", "name": name, "namespace": "acme", "fields": fields}
    return json.dumps(schema, indent=2) + "\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> None:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def levels_file(level: CompatibilityLevel) -> str:
    return f'default = "{level.value}"\n'


def check(level: CompatibilityLevel | None = None) -> Any:
    return check_against_git(
        Path("schemas"),
        default_ref(),
        naming=NAMING,
        levels=Levels.load(Path("schemas")),
        level=level,
    )


@pytest.mark.parametrize(
    ("level", "change", "compatible"),
    [
        ("BACKWARD", "add-with-default", True),
        ("BACKWARD", "add-required", False),
        ("BACKWARD", "remove-required", True),
        ("FORWARD", "add-with-default", True),
        ("FORWARD", "add-required", True),
        ("FORWARD", "remove-required", False),
        ("FULL", "add-with-default", True),
        ("FULL", "add-required", False),
        ("FULL", "remove-required", False),
        ("NONE", "add-required", True),
    ],
)
def test_each_level_classifies_a_change(
    repo: Path, level: str, change: str, compatible: bool
) -> None:
    declared = CompatibilityLevel(level)
    commit(
        repo,
        {"schemas/acme.Order.avsc": avsc(V1), "schemas/compatibility.toml": levels_file(declared)},
    )
    commit(repo, {"schemas/acme.Order.avsc": avsc(CHANGES[change])})

    (result,) = check().results
    assert result.subject == "orders-value"  # the runtime's: the event type's topic
    assert result.level is declared
    assert result.status == ("compatible" if compatible else "incompatible")
    if not compatible:
        problem = result.problems[0]
        assert problem.kinds  # avro.compatibility's own classification and location
        assert problem.locations
        assert problem.direction in level.replace("FULL", "BACKWARD FORWARD")


@pytest.mark.parametrize("base", ["BACKWARD", "FORWARD", "FULL"])
def test_transitive_levels_compare_with_every_earlier_commit(repo: Path, base: str) -> None:
    for fields in CHAIN[:2]:
        commit(repo, {"schemas/acme.Order.avsc": avsc(fields)})
    commit(repo, {"schemas/unrelated.txt": "x"})  # history of other files is not a version
    Path("schemas/acme.Order.avsc").write_text(avsc(CHAIN[2]))  # the change under review
    ref = git(repo, "rev-parse", "--short", "HEAD").strip()

    (plain,) = check_against_git(
        Path("schemas"), "HEAD", naming=NAMING, levels=Levels(), level=CompatibilityLevel(base)
    ).results
    assert (plain.status, plain.compared_with) == ("compatible", (ref,))

    transitive = CompatibilityLevel(f"{base}_TRANSITIVE")
    (result,) = check_against_git(
        Path("schemas"), "HEAD", naming=NAMING, levels=Levels(), level=transitive
    ).results
    assert result.status == "incompatible"
    assert len(result.compared_with) == 2  # the two commits that changed the file
    assert {p.version for p in result.problems} == {result.compared_with[0]}  # only with v1


def test_new_deleted_and_unchanged(repo: Path) -> None:
    commit(repo, {"schemas/acme.Order.avsc": avsc(V1), "schemas/acme.Gone.avsc": avsc(V1, "Gone")})
    commit(repo, {"schemas/acme.Gone.avsc": None, "schemas/acme.Fresh.avsc": avsc(V1, "Fresh")})
    statuses = {r.name: r.status for r in check().results}
    assert statuses == {"acme.Order": "unchanged", "acme.Fresh": "new", "acme.Gone": "deleted"}

    report = check_against_git(
        Path("schemas"), "HEAD~1", naming=NAMING, levels=Levels(), in_use={"acme.Gone"}
    )
    gone = next(r for r in report.results if r.name == "acme.Gone")
    assert gone.status == "deleted-in-use"
    assert report.failed


def test_without_history_everything_is_new(repo: Path) -> None:
    commit(repo, {"schemas/acme.Order.avsc": avsc(V1)})
    assert default_ref() is None  # one commit, no origin/main
    (result,) = check().results
    assert result.status == "new"


def test_merge_base_with_origin_main_is_the_default(repo: Path) -> None:
    commit(repo, {"schemas/acme.Order.avsc": avsc(V1)})
    base = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", "refs/remotes/origin/main", base)
    commit(repo, {"schemas/acme.Order.avsc": avsc(CHANGES["add-with-default"])})
    commit(repo, {"schemas/acme.Order.avsc": avsc(CHANGES["add-required"])})
    assert default_ref() == base  # not HEAD~1: the whole branch is under review
    (result,) = check().results
    assert result.status == "incompatible"


def run_cli(repo: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MESH_APP", "MESH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "mesh", "schema", "check", *args],
        cwd=repo,
        env={**env, "CI": "true"} if ci else env,
        capture_output=True,
        text=True,
        check=False,
    )


def declare_app(repo: Path) -> dict[str, str]:
    """The files that declare the repository's app (``app =`` in mesh.toml), to commit."""
    return {"shop.py": APP, "mesh.toml": 'app = "shop:app"\n'}


def test_cli_exit_codes_json_and_markdown(repo: Path) -> None:
    commit(
        repo,
        {
            **declare_app(repo),
            "schemas/acme.Order.avsc": avsc(V1),
            "schemas/acme.Item.avsc": avsc(V1, "Item"),
        },
    )
    commit(repo, {"schemas/acme.Order.avsc": avsc(CHANGES["add-with-default"])})

    ok = run_cli(repo, "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True
    assert {r["subject"]: r["status"] for r in data["results"]} == {
        "orders-value": "compatible",
        "items-value": "unchanged",
    }

    required = {"name": "m", "type": "long"}  # data written so far has no m
    Path("schemas/acme.Order.avsc").write_text(avsc([*CHANGES["add-with-default"], required]))
    broken = run_cli(repo, "--against", "HEAD", "--format", "markdown")
    assert broken.returncode == 1, broken.stderr
    lines = broken.stdout.splitlines()
    assert lines[0] == "### mesh schema check: ❌ 1 breaking change(s)"
    assert (
        "| ❌ | `orders-value` | `schemas/acme.Order.avsc` | BACKWARD | **INCOMPATIBLE** |" in lines
    )
    assert "| ▫️ | `items-value` | `schemas/acme.Item.avsc` | BACKWARD | unchanged |" in lines
    assert "#### `orders-value`: INCOMPATIBLE" in lines
    reason = next(line for line in lines if line.startswith("- BACKWARD"))
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in reason
    assert "/fields/3" in reason  # the field path avro.compatibility reports

    table = run_cli(repo, "--against", "HEAD", "--level", "forward")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "compatible" in table.stdout


def test_cli_bad_input_exits_2(repo: Path) -> None:
    commit(repo, {**declare_app(repo), "schemas/acme.Order.avsc": avsc(V1)})
    Path("schemas/acme.Order.avsc").write_text('{\n  "type": "record",\n  "name": \n}\n')
    invalid = run_cli(repo, "--against", "HEAD")
    assert invalid.returncode == 2
    assert "schemas/acme.Order.avsc:4: not valid JSON: Expecting value (column 1)" in invalid.stderr

    Path("schemas/acme.Order.avsc").write_text(avsc(V1))
    unknown_ref = run_cli(repo, "--against", "no-such-ref")
    assert unknown_ref.returncode == 2
    assert "no-such-ref" in unknown_ref.stderr

    Path("schemas/compatibility.toml").write_text('default = "SIDEWAYS"\n')
    bad_level = run_cli(repo, "--against", "HEAD")
    assert bad_level.returncode == 2
    assert "SIDEWAYS" in bad_level.stderr


def test_an_avsc_whose_topic_no_declared_app_gives_exits_2_instead_of_passing_as_new(
    repo: Path,
) -> None:
    commit(repo, {"schemas/acme.Order.avsc": avsc(V1)})
    commit(repo, {"schemas/acme.Order.avsc": avsc(CHANGES["add-required"])})  # breaking

    undeclared = run_cli(repo)
    assert undeclared.returncode == 2, undeclared.stdout
    (line,) = undeclared.stderr.strip().splitlines()
    assert line.startswith("error: cannot tell the registry subject of schemas/acme.Order.avsc")
    assert "no app is declared" in line
    assert 'app = "module:app" in mesh.toml' in line

    commit(repo, {**declare_app(repo), "schemas/acme.Stray.avsc": avsc(V1, "Stray")})
    stray = run_cli(repo, "--against", "HEAD~1")
    assert stray.returncode == 2, stray.stdout
    assert "schemas/acme.Stray.avsc (acme.Stray)" in stray.stderr
    assert "app shop:app declares no event type of that name" in stray.stderr

    Path("schemas/acme.Stray.avsc").unlink()
    declared = run_cli(repo, "--against", "HEAD~2", "--json")
    assert declared.returncode == 1, declared.stderr
    (result,) = json.loads(declared.stdout)["results"]
    assert (result["subject"], result["status"]) == ("orders-value", "incompatible")


def test_no_git_history_is_said_loudly_and_fails_in_ci_unless_allowed(repo: Path) -> None:
    commit(repo, {**declare_app(repo), "schemas/acme.Order.avsc": avsc(V1)})  # the only commit

    local = run_cli(repo)
    assert local.returncode == 0, local.stderr
    assert "warning: no git history to compare with" in local.stderr
    assert "every schema counts as new" in local.stderr

    in_ci = run_cli(repo, ci=True)
    assert in_ci.returncode == 2, in_ci.stdout
    (line,) = in_ci.stderr.strip().splitlines()
    assert line.startswith("error: no git history to compare with")
    assert "--allow-no-base" in line

    allowed = run_cli(repo, "--allow-no-base", "--json", ci=True)
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: no git history" in allowed.stderr
    assert json.loads(allowed.stdout)["baseline"] == "nothing (no git history)"
