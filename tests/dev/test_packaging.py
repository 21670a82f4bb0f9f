"""The wheel a user installs: its name is free on PyPI (`mesh` is another project), every
install hint names it, and it carries what `mesh demo` and `mesh init` read at run time."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
HINT = re.compile(r"pip install '([A-Za-z0-9_.-]+)\[")


def test_the_distribution_is_not_named_like_the_unrelated_mesh_project() -> None:
    assert NAME == "mesh-agents"


def test_every_install_hint_names_the_distribution() -> None:
    hints = {
        f"{path.relative_to(REPO)}: {name}"
        for path in (REPO / "mesh").rglob("*.py")
        for name in HINT.findall(path.read_text())
    }
    assert hints
    assert {hint for hint in hints if not hint.endswith(f": {NAME}")} == set()
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    documented = {
        f"{path.relative_to(REPO)}: {name}"
        for path in docs
        for name in HINT.findall(path.read_text())
    }
    assert any(hint.startswith("README.md: ") for hint in documented)
    assert {hint for hint in documented if not hint.endswith(f": {NAME}")} == set()


def test_the_wheel_ships_the_demo_pipeline_with_its_schemas_and_policies(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(metadata).decode())
    assert fields["Name"] == NAME
    assert "demo" in fields.get_all("Provides-Extra")
    research = "mesh/dev/demo/research/"
    shipped = {n.removeprefix(research) for n in names if n.startswith(research)}
    avsc = {p.name for p in (REPO / research / "schemas").glob("*.avsc")}
    assert avsc
    assert {f"schemas/{name}" for name in avsc} | {"mesh.toml", "pipeline.py"} <= shipped
    assert not any(n.startswith("agents/") for n in names)  # no second copy
    template = "mesh/dev/template/"
    assert {f"{template}mesh.toml.tmpl", f"{template}tests/test_app.py.tmpl"} <= names
    assert f"{template}dot-github/workflows/schema-check.yml.tmpl" in names
