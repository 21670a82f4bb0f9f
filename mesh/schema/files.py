"""The ``schemas/`` directory: one ``.avsc`` per event type, generated from its model.

The model is the source of truth. ``mesh schema gen`` writes
``schemas/<namespace>.<Name>.avsc`` (pretty JSON, stable order, trailing newline) so that
schema changes are reviewed in pull requests; at start-up :func:`verify_schema` fails
when a model and its file disagree, naming the file, each differing field and the
command that fixes it. Files are compared as parsed JSON: formatting alone is no drift.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mesh.errors import SchemaError
from mesh.event import Event

__all__ = [
    "SCHEMA_DIR",
    "SchemaFile",
    "diff_schemas",
    "find_event_types",
    "generate_schemas",
    "render_schema",
    "schema_path",
    "verify_schema",
]

SCHEMA_DIR = Path("schemas")
_SHOWN_CHARS = 120
_ABSENT = object()  # a key the schema does not have (unlike a null value)


class _Sides(NamedTuple):
    """How differences name the two schemas compared."""

    left: str
    right: str
    the_left: str
    the_right: str


_MODEL_SIDES = _Sides("model", ".avsc", "the model", "the .avsc")

#: What ``generate_schemas`` did (or, with ``check``, found) for one event type.
FileState = Literal["unchanged", "created", "updated", "missing", "drifted"]


@dataclass(frozen=True)
class SchemaFile:
    """One event type's ``.avsc``: where it is, its state, how it differs from the model."""

    event_type: type[Event]
    path: Path
    state: FileState
    differences: tuple[str, ...] = ()


def schema_path(event_type: type[Event], schema_dir: Path = SCHEMA_DIR) -> Path:
    return schema_dir / f"{event_type.event_type()}.avsc"


def render_schema(event_type: type[Event]) -> str:
    """The ``.avsc`` text of *event_type*, byte for byte what ``mesh schema gen`` writes."""
    return json.dumps(event_type.avro_schema(), indent=2, ensure_ascii=False) + "\n"


def find_event_types(modules: Iterable[str]) -> list[type[Event]]:
    """The event types defined in *modules* (a package: in all its submodules), by name.

    Importing is the point: classes are found among the loaded subclasses of ``Event``.
    """
    names: set[str] = set()
    for name in modules:
        module = _import(name)
        names.add(module.__name__)
        if hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, prefix=f"{module.__name__}."):
                names.add(_import(info.name).__name__)
    found: dict[str, type[Event]] = {}
    for cls in _subclasses(Event):
        if cls.__module__ not in names:
            continue
        other = found.setdefault(cls.event_type(), cls)
        if other is not cls:
            raise SchemaError(
                f"event type {cls.event_type()} is declared twice: "
                f"{_qualified(other)} and {_qualified(cls)}"
            )
    return [found[name] for name in sorted(found)]


def generate_schemas(
    event_types: Iterable[type[Event]], schema_dir: Path = SCHEMA_DIR, *, check: bool = False
) -> list[SchemaFile]:
    """Write the ``.avsc`` of each event type that is missing or differs from its model.

    With *check* nothing is written: differing files are reported as ``drifted``, absent
    ones as ``missing``.
    """
    results = []
    for event_type in event_types:
        path = schema_path(event_type, schema_dir)
        text = render_schema(event_type)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            results.append(SchemaFile(event_type, path, "unchanged"))
            continue
        differences = () if current is None else tuple(_compare(event_type, current))
        state: FileState
        if check:
            # A file that differs only in formatting is not drift.
            state = "missing" if current is None else "drifted" if differences else "unchanged"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            state = "created" if current is None else "updated"
        results.append(SchemaFile(event_type, path, state, differences))
    return results


def verify_schema(event_type: type[Event], schema_dir: Path = SCHEMA_DIR) -> None:
    """Raise :class:`SchemaError` unless the ``.avsc`` of *event_type* matches its model."""
    path = schema_path(event_type, schema_dir)
    fix = f"run `mesh schema gen --module {event_type.__module__}` and review the change"
    if not path.is_file():
        raise SchemaError(
            f"{path} is missing for event type {event_type.event_type()} "
            f"({_qualified(event_type)}); {fix}"
        )
    differences = list(_compare(event_type, path.read_text(encoding="utf-8")))
    if differences:
        lines = "\n".join(f"  - {line}" for line in differences)
        raise SchemaError(
            f"{path} does not match event type {event_type.event_type()} "
            f"({_qualified(event_type)}):\n{lines}\n"
            f"The model is the source of truth: {fix}."
        )


def diff_schemas(model: Any, avsc: Any, *, labels: tuple[str, str] | None = None) -> list[str]:
    """How the ``.avsc`` schema *avsc* differs from the model's schema, one line each.

    *labels* name the two sides otherwise (``("version 2", "version 3")``): the same
    field-level diff serves ``mesh schema diff``.
    """
    sides = _MODEL_SIDES if labels is None else _Sides(*labels, *labels)
    if model == avsc:
        return []
    if _is_record(model) and _is_record(avsc):
        return _diff_record(model, avsc, "", sides) or ["the schemas differ"]
    return [f"schema differs: {sides.left} {_show(model)}, {sides.right} {_show(avsc)}"]


def _compare(event_type: type[Event], text: str) -> Iterator[str]:
    try:
        avsc = json.loads(text)
    except json.JSONDecodeError as exc:
        yield f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        return
    yield from diff_schemas(event_type.avro_schema(), avsc)


def _diff_record(
    model: dict[str, Any], avsc: dict[str, Any], prefix: str, sides: _Sides
) -> list[str]:
    where = f"record '{prefix.rstrip('.')}'" if prefix else "record"
    out = [
        f"{where}: {key} differs: {sides.left} {_show(model.get(key, _ABSENT))}, "
        f"{sides.right} {_show(avsc.get(key, _ABSENT))}"
        for key in _keys(model, avsc, skip={"fields"})
        if _json(model.get(key, _ABSENT)) != _json(avsc.get(key, _ABSENT))
    ]
    model_fields = {field["name"]: field for field in model.get("fields", [])}
    avsc_fields = {field.get("name"): field for field in avsc.get("fields", [])}
    for name in model_fields.keys() - avsc_fields.keys():
        out.append(f"field '{prefix}{name}': in {sides.the_left}, missing from {sides.the_right}")
    for name in avsc_fields.keys() - model_fields.keys():
        out.append(f"field '{prefix}{name}': in {sides.the_right}, not in {sides.the_left}")
    for name, field in model_fields.items():
        if name in avsc_fields:
            out.extend(_diff_field(field, avsc_fields[name], f"{prefix}{name}", sides))
    model_order = [name for name in model_fields if name in avsc_fields]
    avsc_order = [name for name in avsc_fields if name in model_fields]
    if model_order != avsc_order:
        out.append(
            f"{where}: field order differs (it changes the binary encoding): "
            f"{sides.left} {model_order}, {sides.right} {avsc_order}"
        )
    return sorted(out)


def _diff_field(model: dict[str, Any], avsc: dict[str, Any], path: str, sides: _Sides) -> list[str]:
    out = _diff_type(model["type"], avsc.get("type", _ABSENT), path, sides)
    for key in _keys(model, avsc, skip={"name", "type"}):
        if _json(model.get(key, _ABSENT)) != _json(avsc.get(key, _ABSENT)):
            out.append(
                f"field '{path}': {key} differs: {sides.left} {_show(model.get(key, _ABSENT))}, "
                f"{sides.right} {_show(avsc.get(key, _ABSENT))}"
            )
    return out


def _diff_type(model: Any, avsc: Any, path: str, sides: _Sides) -> list[str]:
    """Type differences, descending into records, array items, map values, union branches."""
    if model == avsc:
        return []
    if _is_record(model) and _is_record(avsc):
        return _diff_record(model, avsc, f"{path}.", sides)
    if _is_a(model, "array") and _is_a(avsc, "array"):
        return _diff_type(model["items"], avsc["items"], f"{path}[]", sides)
    if _is_a(model, "map") and _is_a(avsc, "map"):
        return _diff_type(model["values"], avsc["values"], f"{path}{{}}", sides)
    if isinstance(model, list) and isinstance(avsc, list) and len(model) == len(avsc):
        kinds = [_kind(branch) for branch in model]
        if kinds == [_kind(branch) for branch in avsc]:
            return [
                line
                for m, a in zip(model, avsc, strict=True)
                for line in _diff_type(m, a, path, sides)
            ]
    return [
        f"field '{path}': type differs: {sides.left} {_show(model)}, {sides.right} {_show(avsc)}"
    ]


def _kind(schema: Any) -> Any:
    return schema.get("type") if isinstance(schema, dict) else schema


def _keys(model: dict[str, Any], avsc: dict[str, Any], *, skip: set[str]) -> list[str]:
    return sorted((model.keys() | avsc.keys()) - skip)


def _is_record(schema: Any) -> bool:
    return _is_a(schema, "record")


def _is_a(schema: Any, kind: str) -> bool:
    return isinstance(schema, dict) and schema.get("type") == kind


def _json(value: Any) -> str:
    """A comparable form that tells 1 from 1.0 and true from 1, as Avro defaults must."""
    return "(none)" if value is _ABSENT else json.dumps(value, sort_keys=True)


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SchemaError(f"cannot import module {name!r}: {exc}") from None


def _subclasses(cls: type[Event]) -> Iterator[type[Event]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
