"""Avro schemas from pydantic models: the one mapping from Python field types to Avro.

==============================  =====================================================
Python                          Avro
==============================  =====================================================
``str`` / ``int`` / ``float``   ``string`` / ``long`` / ``double``
``bool`` / ``bytes``            ``boolean`` / ``bytes``
``datetime``                    ``long`` + ``timestamp-millis`` (aware; ms precision)
``date``                        ``int`` + ``date``
``UUID``                        ``string`` + ``uuid``
``Decimal`` (max_digits,        ``bytes`` + ``decimal`` (precision, scale)
decimal_places required)
``StrEnum`` subclass            ``enum`` named after the class, symbols = values
``Literal["a", "b"]``           ``string``
``list[T]`` / ``dict[str, T]``  ``array`` / ``map``
``T | None``                    union with ``null`` (``null`` first when the default is None)
a pydantic model                ``record`` (an :class:`~mesh.event.Event` keeps its name)
==============================  =====================================================

Anything else raises :class:`~mesh.errors.SchemaError` naming the class and field, when the
class is defined. Field descriptions (or attribute docstrings) become ``doc``, defaults
become Avro defaults.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, Union
from uuid import UUID

import fastavro
from fastavro.schema import SchemaParseException, UnknownType
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mesh.errors import SchemaError

__all__ = ["AvroModel", "avro_name", "class_doc", "model_schema", "with_python_defaults"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_PRIMITIVES: dict[object, str] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    bytes: "bytes",
}
_LOGICAL: dict[object, dict[str, str]] = {
    datetime: {"type": "long", "logicalType": "timestamp-millis"},
    date: {"type": "int", "logicalType": "date"},
    UUID: {"type": "string", "logicalType": "uuid"},
}


@dataclass(frozen=True, slots=True)
class AvroModel:
    """A model's Avro schema and what the serde may skip for it.

    ``flat``: no nested records, so the model's ``__dict__`` is a datum fastavro can
    write. ``plain``: every field is a primitive or logical type (or a list/map/optional
    of them) without constraints Avro does not enforce itself, so what fastavro decodes
    with this very schema is already what pydantic validation would produce.
    ``datetime_fields``: the fields holding a datetime at some depth, where naive values
    must be refused (fastavro would take them as local time).
    """

    schema: dict[str, Any]
    flat: bool
    plain: bool
    datetime_fields: tuple[str, ...]


def avro_name(value: str, *, what: str) -> str:
    """*value* if it is a valid Avro name, else a :class:`SchemaError` naming *what*."""
    if not _NAME.match(value):
        raise SchemaError(f"{what}: {value!r} is not a valid Avro name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def model_schema(
    model: type[BaseModel], *, name: str, namespace: str | None, doc: str | None
) -> AvroModel:
    """The Avro record schema of *model* under ``namespace.name``."""
    builder = _Builder(owner=model.__qualname__)
    schema = builder.record(model, name=name, namespace=namespace, doc=doc, enclosing=None)
    assert isinstance(schema, dict)  # the top-level record is always a definition
    try:
        fastavro.parse_schema(schema)  # e.g. a default that does not fit its field's type
    except (SchemaParseException, UnknownType) as exc:
        raise SchemaError(f"{model.__qualname__}: not a valid Avro schema: {exc}") from None
    datetime_fields = tuple(
        name for name, info in model.model_fields.items() if _mentions(info.annotation, datetime)
    )
    return AvroModel(
        schema=schema, flat=builder.flat, plain=builder.plain, datetime_fields=datetime_fields
    )


class _Builder:
    """Walks one model's field types; named types are defined once, then referenced."""

    def __init__(self, *, owner: str) -> None:
        self.owner = owner
        self.named: dict[str, tuple[object, dict[str, Any]]] = {}
        self.flat = True
        self.plain = True

    def record(
        self,
        model: type[BaseModel],
        *,
        name: str,
        namespace: str | None,
        doc: str | None,
        enclosing: str | None,
    ) -> dict[str, Any] | str:
        full = f"{namespace}.{name}" if namespace else name
        reference = self._reference(full, model)
        if reference is not None:
            return reference
        schema: dict[str, Any] = {"type": "record", "name": name}
        if namespace != enclosing:
            schema["namespace"] = namespace or ""
        if doc:
            schema["doc"] = doc
        self.named[full] = (model, schema)
        schema["fields"] = [
            self.field(model, field_name, info, namespace)
            for field_name, info in model.model_fields.items()
        ]
        return schema

    def field(
        self, model: type[BaseModel], name: str, info: FieldInfo, namespace: str | None
    ) -> dict[str, Any]:
        where = f"{model.__qualname__}.{name}"
        if model.__qualname__ != self.owner:
            where = f"{self.owner}: {where}"
        avro_name(name, what=f"{where}: field name")
        if info.alias is not None and info.alias != name:
            raise SchemaError(f"{where}: aliases are not supported (the Avro field is {name!r})")
        if info.annotation is None:
            raise SchemaError(f"{where}: the field has no type annotation")
        avro_type = self.type_of(info.annotation, info.metadata, where, namespace)
        field: dict[str, Any] = {"name": name, "type": avro_type}
        default = _static_default(info)
        if default is not PydanticUndefined:
            if isinstance(avro_type, list) and default is not None:
                # A union's default must match its first branch.
                field["type"] = avro_type = [*avro_type[1:], "null"]
            field["default"] = self.default_json(default, avro_type, where)
        if info.description:
            field["doc"] = info.description
        return field

    def type_of(self, tp: Any, metadata: list[Any], where: str, namespace: str | None) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is Annotated:
            return self.type_of(args[0], [*metadata, *args[1:]], where, namespace)
        if any(getattr(item, name, None) is not None for item in metadata for name in _CHECKS):
            self.plain = False
        if origin in (Union, types.UnionType):
            members = [arg for arg in args if arg is not type(None)]
            if len(members) != 1 or len(args) != 2:
                raise SchemaError(f"{where}: only `T | None` unions are supported, not {tp}")
            return ["null", self.type_of(members[0], metadata, where, namespace)]
        if origin is Literal:
            if not all(isinstance(arg, str) for arg in args):
                raise SchemaError(f"{where}: only Literal of strings is supported, not {tp}")
            self.plain = False
            return "string"
        if origin is list and len(args) == 1:
            return {"type": "array", "items": self.type_of(args[0], [], where, namespace)}
        if origin is dict and len(args) == 2:
            if args[0] is not str:
                raise SchemaError(f"{where}: map keys must be str, not {args[0]}")
            return {"type": "map", "values": self.type_of(args[1], [], where, namespace)}
        if tp in _PRIMITIVES:
            return _PRIMITIVES[tp]
        if tp in _LOGICAL:
            return dict(_LOGICAL[tp])
        if tp is Decimal:
            return _decimal(metadata, where)
        if isinstance(tp, type) and issubclass(tp, Enum):
            self.plain = False
            return self.enum(tp, where, namespace)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.flat = self.plain = False
            name, own_namespace, doc = _naming(tp, namespace)
            return self.record(tp, name=name, namespace=own_namespace, doc=doc, enclosing=namespace)
        raise SchemaError(
            f"{where}: type {tp!r} has no Avro mapping; use str, int, float, bool, bytes, "
            "datetime, date, UUID, Decimal, a StrEnum, Literal[str, ...], list[T], "
            "dict[str, T], T | None or a pydantic model"
        )

    def enum(self, enum: type[Enum], where: str, namespace: str | None) -> dict[str, Any] | str:
        full = f"{namespace}.{enum.__name__}" if namespace else enum.__name__
        reference = self._reference(full, enum)
        if reference is not None:
            return reference
        if not issubclass(enum, str):
            raise SchemaError(f"{where}: enum {enum.__name__} must be a StrEnum (Avro symbols)")
        symbols = [avro_name(m.value, what=f"{where}: symbol of {enum.__name__}") for m in enum]
        schema: dict[str, Any] = {"type": "enum", "name": enum.__name__, "symbols": symbols}
        doc = class_doc(enum)
        if doc:
            schema["doc"] = doc
        self.named[full] = (enum, schema)
        return schema

    def _reference(self, full: str, tp: object) -> str | None:
        """The full name when *tp* is already defined, None when it still needs a definition."""
        seen = self.named.get(full)
        if seen is None:
            return None
        if seen[0] is not tp:
            raise SchemaError(f"{self.owner}: two different types are both named {full!r}")
        return full

    def default_json(self, value: Any, avro_type: Any, where: str) -> Any:
        """*value* written the way an Avro schema spells a default of *avro_type*."""
        if value is None:
            return None
        if isinstance(avro_type, list):  # a union: the default matches its first branch
            return self.default_json(value, avro_type[0], where)
        if isinstance(avro_type, str) and avro_type in self.named:
            avro_type = self.named[avro_type][1]
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, BaseModel):
            fields = {f["name"]: f["type"] for f in avro_type["fields"]}
            return {k: self.default_json(getattr(value, k), fields[k], where) for k in fields}
        if isinstance(value, list):
            return [self.default_json(item, avro_type["items"], where) for item in value]
        if isinstance(value, dict):
            return {k: self.default_json(v, avro_type["values"], where) for k, v in value.items()}
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise SchemaError(f"{where}: a datetime default must be timezone-aware")
            return (value - _EPOCH) // _MILLISECOND
        if isinstance(value, date):
            return value.toordinal() - _EPOCH_DAY
        if isinstance(value, UUID):
            return str(value)
        if isinstance(value, Decimal):
            unscaled = int(value.scaleb(avro_type["scale"]))
            size = (unscaled.bit_length() + 8) // 8
            return unscaled.to_bytes(size, "big", signed=True).decode("latin-1")
        if isinstance(value, bytes):
            return value.decode("latin-1")
        return value


def with_python_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of *schema* whose field defaults are the Python values decoding would give.

    fastavro fills a field the writer did not have with the reader's default exactly as
    the schema spells it, without its logical type: an int for a date, a latin-1 string
    for bytes or a decimal. A reader schema from this function (parsed with
    ``_ignore_default_error``) makes the filled values what decoding would have produced.
    """
    converted = _with_python_defaults(schema, {}, None)
    assert isinstance(converted, dict)
    return converted


def _with_python_defaults(schema: Any, named: dict[str, Any], namespace: str | None) -> Any:
    if isinstance(schema, list):
        return [_with_python_defaults(branch, named, namespace) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema["type"]
    if kind == "array":
        return {**schema, "items": _with_python_defaults(schema["items"], named, namespace)}
    if kind == "map":
        return {**schema, "values": _with_python_defaults(schema["values"], named, namespace)}
    if kind not in ("record", "enum", "fixed"):
        return schema
    name = schema["name"]
    if "namespace" in schema:
        namespace = schema["namespace"] or None
    if "." in name:
        namespace = name.rpartition(".")[0]
    copy = {**schema}
    named[f"{namespace}.{name.rpartition('.')[2]}" if namespace else name] = copy
    if kind == "record":
        copy["fields"] = []
        for field in schema["fields"]:
            converted = {**field, "type": _with_python_defaults(field["type"], named, namespace)}
            if "default" in field:
                converted["default"] = _python(field["default"], converted["type"], named)
            copy["fields"].append(converted)
    return copy


def _python(value: Any, avro_type: Any, named: dict[str, Any]) -> Any:
    """The inverse of :meth:`_Builder.default_json`: a JSON default as a decoded value."""
    if isinstance(avro_type, list):  # a union: the default matches its first branch
        return _python(value, avro_type[0], named)
    if isinstance(avro_type, str):
        avro_type = named.get(avro_type, {"type": avro_type})
    kind = avro_type["type"]
    logical = avro_type.get("logicalType")
    if value is None:
        return None
    if kind == "record":
        return {f["name"]: _python(value[f["name"]], f["type"], named) for f in avro_type["fields"]}
    if kind == "array":
        return [_python(item, avro_type["items"], named) for item in value]
    if kind == "map":
        return {key: _python(item, avro_type["values"], named) for key, item in value.items()}
    if logical == "timestamp-millis":
        return _EPOCH + timedelta(milliseconds=value)
    if logical == "date":
        return date.fromordinal(value + _EPOCH_DAY)
    if logical == "uuid":
        return UUID(value)
    if logical == "decimal":
        unscaled = int.from_bytes(value.encode("latin-1"), "big", signed=True)
        return Decimal(unscaled).scaleb(-avro_type.get("scale", 0))
    if kind in ("bytes", "fixed"):
        return value.encode("latin-1")
    return value


_MILLISECOND = datetime.resolution * 1000
#: Constraint names pydantic keeps in field metadata that Avro does not enforce.
_CHECKS = (
    "gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern",
    "strict", "allow_inf_nan", "func",
)  # fmt: skip


def _decimal(metadata: list[Any], where: str) -> dict[str, Any]:
    precision = _first(metadata, "max_digits")
    scale = _first(metadata, "decimal_places")
    if precision is None or scale is None:
        raise SchemaError(
            f"{where}: a Decimal needs max_digits and decimal_places, e.g. "
            "Field(max_digits=10, decimal_places=2), for the Avro decimal precision and scale"
        )
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


def _first(metadata: list[Any], name: str) -> Any:
    return next((getattr(m, name) for m in metadata if getattr(m, name, None) is not None), None)


def _mentions(tp: Any, target: type, seen: set[type] | None = None) -> bool:
    """Whether the annotation *tp* contains *target*, through containers and nested models."""
    if tp is target:
        return True
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        seen = seen if seen is not None else set()
        if tp in seen:
            return False
        seen.add(tp)
        return any(_mentions(f.annotation, target, seen) for f in tp.model_fields.values())
    return any(_mentions(arg, target, seen) for arg in typing.get_args(tp))


def _static_default(info: FieldInfo) -> Any:
    """The field's default as a constant, PydanticUndefined when it has none or it varies.

    Of the default factories only the empty containers are constants; ``uuid4`` or
    ``datetime.now`` give no Avro default.
    """
    if info.default_factory in (list, dict):
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def class_doc(cls: type) -> str | None:
    """The docstring a class declares itself (not an inherited one), cleaned, as Avro ``doc``."""
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else None


def _naming(model: type[BaseModel], enclosing: str | None) -> tuple[str, str | None, str | None]:
    """Name, namespace and doc of a nested record: an Event's own, else the class name."""
    declared = getattr(model, "__mesh_declaration__", None)
    if declared is not None:
        return declared.name, declared.namespace, declared.doc
    name = avro_name(model.__name__, what=f"record {model.__qualname__}")
    return name, enclosing, class_doc(model)
