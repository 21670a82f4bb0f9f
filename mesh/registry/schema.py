"""Avro schema texts: validated with the ``avro`` package and kept in one canonical text.

Two requests registering the same schema must get the same id even when they differ in
whitespace, so the registry stores the compact JSON of what it was given (key order and
every property kept). With ``normalize=true`` it stores the ``avro`` package's own
rendering of the parsed schema instead, which also folds ``{"type": "string"}`` into
``"string"`` and similar spellings.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import avro.name
import avro.schema

from mesh.registry.errors import ApiError

__all__ = ["SUPPORTED_TYPES", "ParsedSchema", "Reference", "compact_json", "parse_schema"]

SUPPORTED_TYPES = ("AVRO",)


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """A named type that a schema takes from another subject's version."""

    name: str
    subject: str
    version: int

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(frozen=True, slots=True)
class ParsedSchema:
    """A valid Avro schema: the text the registry stores, its references, the parsed form."""

    text: str
    references: tuple[Reference, ...]
    parsed: avro.schema.Schema

    @property
    def identity(self) -> tuple[str, tuple[Reference, ...]]:
        """What makes two schemas the same schema (and so the same id)."""
        return self.text, self.references


def compact_json(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def parse_schema(
    text: str,
    *,
    references: Sequence[Reference] = (),
    dependencies: Sequence[str] = (),
    normalize: bool = False,
) -> ParsedSchema:
    """Parse *text*, whose named types may come from *dependencies* (texts, dependencies first).

    Raises ``ApiError`` 42201 for anything that is not a valid Avro schema.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ApiError.invalid_schema(f"Invalid schema: not JSON: {exc}") from None
    names = avro.name.Names()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # avro warns (and ignores) odd logical types
            parsed_deps = [
                avro.schema.make_avsc_object(json.loads(dep), names) for dep in dependencies
            ]
            parsed = avro.schema.make_avsc_object(data, names)
            stored = compact_json(_render(parsed, parsed_deps) if normalize else data)
    except Exception as exc:  # avro raises many types (even TypeError) on bad input
        raise ApiError.invalid_schema(f"Invalid schema: {exc}") from None
    return ParsedSchema(text=stored, references=tuple(references), parsed=parsed)


def _render(parsed: avro.schema.Schema, dependencies: Sequence[avro.schema.Schema]) -> object:
    """The ``avro`` package's JSON for *parsed*, naming (not inlining) types of dependencies."""
    names = avro.name.Names()
    for dependency in dependencies:
        dependency.to_json(names)
    return parsed.to_json(names)
