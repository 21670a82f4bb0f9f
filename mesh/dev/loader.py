"""Find a ``Mesh`` app from a ``module:attribute`` spec, as uvicorn and dramatiq do."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from mesh.errors import ConfigError
from mesh.runtime.app import Mesh


def import_from_cwd() -> None:
    """Make the project's own modules importable, as ``python -m`` would see them."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def load_object(spec: str) -> object:
    """Import ``package.module:attribute`` (the working directory is importable)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"{spec!r} is not of the form module:attribute (e.g. agents.research:app)"
        )
    import_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None


def load_app(spec: str) -> Mesh:
    app = load_object(spec)
    if not isinstance(app, Mesh):
        raise ConfigError(f"{spec!r} is a {type(app).__name__}, not a mesh.Mesh app")
    return app
