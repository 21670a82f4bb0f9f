"""Fixtures shared by every wing's tests (the broker and registry ones come from mesh.testing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mesh import Event, Mesh, Settings
from mesh.schema.files import generate_schemas
from mesh.testing import unique_name


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    return tmp_path / "schemas"


@pytest.fixture
def make_app(mesh_settings: Settings, schemas_dir: Path) -> Callable[..., Mesh]:
    """A fresh app (unique name, so unique consumer groups) on the session's stack."""

    def make(*event_types: type[Event], settings: Settings | None = None) -> Mesh:
        generate_schemas(event_types, schemas_dir)
        return Mesh(unique_name("app"), settings=settings or mesh_settings, schemas_dir=schemas_dir)

    return make
