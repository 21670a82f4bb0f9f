"""`mesh init [DIR]`: a project whose own tests pass as generated, on the session's broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from mesh import Settings


def mesh(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_init_scaffolds_a_project_whose_tests_pass_as_generated(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    created = mesh(tmp_path, "init", "helpdesk")
    assert created.returncode == 0, created.stderr
    project = tmp_path / "helpdesk"
    assert tomllib.loads((project / "mesh.toml").read_text())["app"] == "helpdesk.app:app"
    assert sorted(p.name for p in (project / "schemas").glob("*.avsc")) == [
        "helpdesk.TicketClassified.avsc",
        "helpdesk.TicketOpened.avsc",
    ]
    workflow = project / ".github" / "workflows" / "schema-check.yml"
    assert "mesh schema check" in workflow.read_text()
    linted = subprocess.run(
        [shutil.which("actionlint") or "actionlint", str(workflow)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout

    generated = (project / "tests" / "test_app.py").read_text()
    assert "call_agent(" in generated  # the test kit's, unit and broker
    assert "mesh_run(app)" in generated
    assert "Consumer" not in generated  # no hand-rolled broker plumbing to copy

    drift = mesh(project, "schema", "gen", "--check")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    gate = mesh(project, "schema", "check", "--allow-no-base", "--json")
    assert gate.returncode == 0, gate.stderr
    assert gate.stdout.count('"status": "new"') == 2

    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "2 passed" in tests.stdout


def test_init_refuses_a_directory_with_files_and_a_bad_package_name(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    taken = mesh(tmp_path, "init", "taken")
    assert taken.returncode == 2
    assert taken.stderr.strip() == (
        "error: taken is not an empty directory: mesh init writes a new project"
    )
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"

    bad = mesh(tmp_path, "init", "fresh", "--name", "not-a-package")
    assert bad.returncode == 2
    assert "'not-a-package' is not a Python package name" in bad.stderr
    assert not (tmp_path / "fresh").exists()
