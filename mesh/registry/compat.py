"""Compatibility levels and checks (pure), delegating the Avro rules to ``avro.compatibility``.

BACKWARD means the new schema can read data written with the old one; FORWARD means the
old schema can read data written with the new one; FULL is both. A plain level compares
with the latest live version only, a ``_TRANSITIVE`` level with every live version.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

__all__ = ["DEFAULT_LEVEL", "CompatibilityLevel", "check_compatibility", "parse_level"]


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


def check_compatibility(
    level: CompatibilityLevel,
    new: avro.schema.Schema,
    existing: Sequence[tuple[int, avro.schema.Schema]],
) -> list[str]:
    """Why *new* may not follow *existing* ``(version, schema)`` pairs, oldest first.

    An empty list means compatible.
    """
    against = existing if level.transitive else existing[-1:]
    problems: list[str] = []
    for version, old in against:
        if level.backward:
            problems += _problems(reader=new, writer=old, version=version, direction="BACKWARD")
        if level.forward:
            problems += _problems(reader=old, writer=new, version=version, direction="FORWARD")
    return problems


def _problems(
    *, reader: avro.schema.Schema, writer: avro.schema.Schema, version: int, direction: str
) -> list[str]:
    try:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    except RecursionError:
        return [f"{direction}: schema too deeply nested to compare with version {version}"]
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({kind.name.upper() for kind in result.incompatibilities}))
    details = "; ".join(sorted(result.messages))
    where = ", ".join(sorted(result.locations))
    return [f"{direction} with version {version}: {kinds}: {details} (at {where})"]
