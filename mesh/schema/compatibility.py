"""Compatibility levels and checks (pure), delegating the Avro rules to ``avro.compatibility``.

BACKWARD means the new schema can read data written with the old one; FORWARD means the
old schema can read data written with the new one; FULL is both. A plain level compares
with the latest version only, a ``_TRANSITIVE`` level with every version. The registry
(``mesh registry serve``) and ``mesh schema check`` both decide here, so a change the CLI
accepts is one the registry accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

__all__ = [
    "DEFAULT_LEVEL",
    "CompatibilityLevel",
    "Incompatibility",
    "check_compatibility",
    "incompatibilities",
    "parse_level",
]


class CompatibilityLevel(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        return self.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        return self.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.startswith(("FORWARD", "FULL"))


DEFAULT_LEVEL = CompatibilityLevel.BACKWARD


def parse_level(value: object) -> CompatibilityLevel | None:
    """The level named by *value* (any case), or None when it names none."""
    if not isinstance(value, str):
        return None
    try:
        return CompatibilityLevel(value.upper())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """Why a new schema cannot follow one earlier version, as ``avro.compatibility`` says."""

    direction: Literal["BACKWARD", "FORWARD"]
    #: The earlier version: a registry version number or, for a git history, a commit.
    version: int | str
    kinds: tuple[str, ...]
    messages: tuple[str, ...]
    #: Where in the schema, as JSON-pointer-like paths (``/fields/1/type``).
    locations: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.direction} with version {self.version}: {', '.join(self.kinds)}: "
            f"{'; '.join(self.messages)} (at {', '.join(self.locations)})"
        )


def incompatibilities(
    level: CompatibilityLevel,
    new: avro.schema.Schema,
    existing: Sequence[tuple[int | str, avro.schema.Schema]],
) -> list[Incompatibility]:
    """Why *new* may not follow *existing* ``(version, schema)`` pairs, oldest first.

    An empty list means compatible.
    """
    against = existing if level.transitive else existing[-1:]
    found: list[Incompatibility] = []
    for version, old in against:
        if level.backward:
            found += _check(reader=new, writer=old, version=version, direction="BACKWARD")
        if level.forward:
            found += _check(reader=old, writer=new, version=version, direction="FORWARD")
    return found


def check_compatibility(
    level: CompatibilityLevel,
    new: avro.schema.Schema,
    existing: Sequence[tuple[int | str, avro.schema.Schema]],
) -> list[str]:
    """:func:`incompatibilities` as one line each (the registry's ``messages``)."""
    return [str(problem) for problem in incompatibilities(level, new, existing)]


def _check(
    *,
    reader: avro.schema.Schema,
    writer: avro.schema.Schema,
    version: int | str,
    direction: Literal["BACKWARD", "FORWARD"],
) -> list[Incompatibility]:
    try:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    except RecursionError:
        return [
            Incompatibility(
                direction, version, ("TOO_DEEP",), ("schema too deeply nested to compare",), ("/",)
            )
        ]
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [
        Incompatibility(
            direction=direction,
            version=version,
            kinds=tuple(sorted({kind.name.upper() for kind in result.incompatibilities})),
            messages=tuple(sorted(result.messages)),
            locations=tuple(sorted(result.locations)),
        )
    ]
