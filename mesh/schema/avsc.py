""".avsc files as a set: parsed, validated, and ordered by the named types they share.

A file may use a named type defined in another file (``"type": "acme.Money"``), as
registry references allow; :func:`load_schemas` returns the files dependencies first and
parses each one with the named types of its dependencies. Validation runs both parsers
mesh relies on: ``avro`` (the registry's and the compatibility checker's) and fastavro
(the runtime's, which also checks that defaults match their types). A file that fails
raises :class:`AvscError` with the file, the line where it can be found, and the reason.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import avro.name
import avro.schema
import fastavro

from mesh.errors import InputError

__all__ = ["Avsc", "AvscError", "load_schemas"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_DUPLICATE_FIELD = re.compile(r"Field name (\S+) already in use")
_BAD_DEFAULT = re.compile(r"Default value <(.*)> must match", re.DOTALL)


class AvscError(InputError):
    """An ``.avsc`` file is not a valid Avro schema (the CLI exits with code 2)."""

    def __init__(self, path: str, reason: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Avsc:
    """One valid ``.avsc`` file."""

    path: str
    text: str
    data: Any
    #: The full name of the schema's own type (``namespace.Name``).
    name: str
    parsed: avro.schema.Schema
    #: Full names of the named types this file takes from other files.
    uses: tuple[str, ...] = ()
    #: Paths of the files defining them, direct dependencies only.
    depends_on: tuple[str, ...] = field(default=())


def load_schemas(texts: Mapping[str, str]) -> list[Avsc]:
    """Parse and validate ``{path: text}``; the files in dependency order.

    Raises :class:`AvscError` for the first invalid file (files in path order).
    """
    decoded = {path: _Decoded.of(path, texts[path]) for path in sorted(texts)}
    defined_in: dict[str, str] = {}
    for path, file in decoded.items():
        for name in file.defines:
            other = defined_in.setdefault(name, path)
            if other != path:
                raise AvscError(path, f"named type {name} is also defined in {other}")
    for path, file in decoded.items():
        for name, line, where in file.external:
            if name not in defined_in:
                raise AvscError(path, f"{where}: unknown type {name!r}", line=line)
    order = _dependency_order(decoded, defined_in)
    loaded: dict[str, Avsc] = {}
    for path in order:
        file = decoded[path]
        uses = tuple(sorted({name for name, _, _ in file.external}))
        depends = tuple(sorted({defined_in[name] for name in uses}))
        chain = _closure(depends, loaded)
        parsed = file.parse(chain)
        loaded[path] = Avsc(
            path=path,
            text=file.text,
            data=file.data,
            name=_full_name(parsed, path),
            parsed=parsed,
            uses=uses,
            depends_on=depends,
        )
    return [loaded[path] for path in order]


@dataclass
class _Decoded:
    """A file's JSON, the line of each of its objects, and the named types it defines and uses."""

    path: str
    text: str
    data: Any
    lines: dict[int, int]
    defines: list[str] = field(default_factory=list)
    #: (full name, line, "field 'x'") of every type name not defined in the file itself.
    external: list[tuple[str, int | None, str]] = field(default_factory=list)

    @classmethod
    def of(cls, path: str, text: str) -> _Decoded:
        try:
            data, lines = _decode(text)
        except json.JSONDecodeError as exc:
            raise AvscError(
                path, f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
            ) from None
        except RecursionError:
            raise AvscError(path, "not valid JSON: nested too deeply") from None
        decoded = cls(path, text, data, lines)
        used: list[tuple[str, int | None, str]] = []
        for kind, name, owner, where in _walk(data, namespace="", where="schema", owner=data):
            if kind == "defines":
                decoded.defines.append(name)
            else:
                used.append((name, lines.get(id(owner)), where))
        decoded.external = [entry for entry in used if entry[0] not in decoded.defines]
        return decoded

    def parse(self, dependencies: list[Avsc]) -> avro.schema.Schema:
        names = avro.name.Names()
        named: dict[str, Any] = {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # avro warns (and ignores) odd logical types
                for dependency in dependencies:
                    avro.schema.make_avsc_object(dependency.data, names)
                parsed = avro.schema.make_avsc_object(self.data, names)
        except Exception as exc:  # avro raises many types (even TypeError) on bad input
            raise self._error(str(exc)) from None
        try:
            for dependency in dependencies:
                fastavro.parse_schema(dependency.data, named_schemas=named)
            fastavro.parse_schema(self.data, named_schemas=named)
        except Exception as exc:  # fastavro: SchemaParseException, UnknownType, KeyError...
            raise self._error(str(exc)) from None
        return parsed

    def _error(self, message: str) -> AvscError:
        """*message* with the field it is about and its line, when they can be found."""
        duplicate = _DUPLICATE_FIELD.search(message)
        if duplicate:
            name = duplicate.group(1).rstrip(".")
            fields = [f for f in _fields(self.data) if f.get("name") == name]
            line = self.lines.get(id(fields[-1])) if len(fields) > 1 else None
            return AvscError(self.path, f"field '{name}' is declared twice", line=line)
        bad_default = _BAD_DEFAULT.search(message)
        if bad_default:
            shown = bad_default.group(1)
            for f in _fields(self.data):
                if "default" in f and str(f["default"]) == shown:
                    reason = f"field '{f.get('name')}': default {json.dumps(f['default'])} "
                    return AvscError(
                        self.path,
                        reason + f"does not match its type {json.dumps(f.get('type'))}",
                        line=self.lines.get(id(f)),
                    )
        return AvscError(self.path, message)


def _decode(text: str) -> tuple[Any, dict[int, int]]:
    """The JSON of *text* and the line on which each of its objects starts (by ``id``)."""
    lines: dict[int, int] = {}
    decoder = json.JSONDecoder()

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        text, start = s_and_end
        value, end = json.decoder.JSONObject(s_and_end, *args)
        lines[id(value)] = text.count("\n", 0, start) + 1
        return value, end

    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder.decode(text), lines


def _walk(
    schema: Any, *, namespace: str, where: str, owner: Any
) -> Iterator[tuple[str, str, Any, str]]:
    """``("defines" | "uses", full name, owner, where)`` for each named type in *schema*.

    *owner* is the JSON object to take a line from (the field declaring the type). Only
    the names matter here (which file needs which); ``avro`` validates everything else.
    """
    if isinstance(schema, str):
        if schema not in _PRIMITIVES:
            yield "uses", _resolve(schema, namespace), owner, where
    elif isinstance(schema, list):
        for branch in schema:
            yield from _walk(branch, namespace=namespace, where=where, owner=owner)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED and isinstance(schema.get("name"), str):
            name = schema["name"]
            full = name if "." in name else _resolve(name, schema.get("namespace", namespace))
            yield "defines", full, schema, where
            for item in schema.get("fields", []) if kind in ("record", "error") else []:
                if isinstance(item, dict):
                    yield from _walk(
                        item.get("type"),
                        namespace=full.rpartition(".")[0],
                        where=f"field '{item.get('name')}'",
                        owner=item,
                    )
        elif kind in ("array", "map"):
            inner = schema.get("items" if kind == "array" else "values")
            yield from _walk(inner, namespace=namespace, where=where, owner=owner)
        elif kind not in _NAMED:
            yield from _walk(kind, namespace=namespace, where=where, owner=owner)


def _resolve(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _fields(schema: Any) -> Iterator[dict[str, Any]]:
    """Every field declaration in *schema*, in document order."""
    if isinstance(schema, list):
        for item in schema:
            yield from _fields(item)
    elif isinstance(schema, dict):
        for item in schema.get("fields", []) if isinstance(schema.get("fields"), list) else []:
            if isinstance(item, dict):
                yield item
                yield from _fields(item.get("type"))
        for key in ("type", "items", "values"):
            if isinstance(schema.get(key), dict | list):
                yield from _fields(schema[key])


def _dependency_order(files: Mapping[str, _Decoded], defined_in: Mapping[str, str]) -> list[str]:
    """Paths so that every file comes after the files whose types it uses."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(path: str, chain: list[str]) -> None:
        if state.get(path) == "done":
            return
        if state.get(path) == "visiting":
            cycle = " -> ".join([*chain[chain.index(path) :], path])
            raise AvscError(path, f"named types refer to each other across files: {cycle}")
        state[path] = "visiting"
        for name, _, _ in files[path].external:
            visit(defined_in[name], [*chain, path])
        state[path] = "done"
        order.append(path)

    for path in files:
        visit(path, [])
    return order


def _closure(paths: tuple[str, ...], loaded: Mapping[str, Avsc]) -> list[Avsc]:
    """The files of *paths* and everything they depend on, dependencies first."""
    seen: dict[str, Avsc] = {}

    def add(path: str) -> None:
        if path not in seen:
            for dependency in loaded[path].depends_on:
                add(dependency)
            seen[path] = loaded[path]

    for path in paths:
        add(path)
    return list(seen.values())


def _full_name(parsed: avro.schema.Schema, path: str) -> str:
    if not isinstance(parsed, avro.schema.NamedSchema):
        raise AvscError(path, "the schema must be a named type (a record, enum or fixed)")
    return parsed.fullname
