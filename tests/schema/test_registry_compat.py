"""Compatibility levels: each plain level, each transitive level, and NONE."""

from __future__ import annotations

import json

import avro.schema
import pytest

from mesh.schema.compatibility import CompatibilityLevel, check_compatibility, parse_level


def record(*fields: dict[str, object]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps({"type": "record", "name": "R", "fields": list(fields)}))


A = {"name": "a", "type": "int"}
# A chain where each step is FULL-compatible with the previous one, but v3 is neither
# BACKWARD- nor FORWARD-compatible with v1: b changes from int to string.
V1 = record(A, {"name": "b", "type": "int", "default": 0})
V2 = record(A)
V3 = record(A, {"name": "b", "type": "string", "default": "x"})
WITH_C = record(A, {"name": "c", "type": "string"})  # c has no default


@pytest.mark.parametrize("level", list(CompatibilityLevel))
def test_a_chain_of_compatible_steps(level: CompatibilityLevel) -> None:
    history = [(1, V1), (2, V2)]
    assert check_compatibility(level, V2, history[:1]) == []
    problems = check_compatibility(level, V3, history)
    if level.transitive:
        assert len(problems) == 1 + (level.backward and level.forward)
        assert all("version 1" in problem for problem in problems)
    else:
        assert problems == []


@pytest.mark.parametrize(
    ("level", "compatible"),
    [
        (CompatibilityLevel.NONE, True),
        (CompatibilityLevel.BACKWARD, False),
        (CompatibilityLevel.BACKWARD_TRANSITIVE, False),
        (CompatibilityLevel.FORWARD, True),
        (CompatibilityLevel.FORWARD_TRANSITIVE, True),
        (CompatibilityLevel.FULL, False),
        (CompatibilityLevel.FULL_TRANSITIVE, False),
    ],
)
def test_adding_a_field_without_default(level: CompatibilityLevel, compatible: bool) -> None:
    problems = check_compatibility(level, WITH_C, [(1, V2)])
    assert (problems == []) is compatible
    if not compatible:
        assert "READER_FIELD_MISSING_DEFAULT_VALUE" in problems[0]


@pytest.mark.parametrize(
    ("level", "compatible"),
    [
        (CompatibilityLevel.NONE, True),
        (CompatibilityLevel.BACKWARD, True),
        (CompatibilityLevel.FORWARD, False),
        (CompatibilityLevel.FORWARD_TRANSITIVE, False),
        (CompatibilityLevel.FULL, False),
    ],
)
def test_removing_a_field_without_default(level: CompatibilityLevel, compatible: bool) -> None:
    assert (check_compatibility(level, V2, [(1, WITH_C)]) == []) is compatible


def test_type_change_is_only_allowed_with_none() -> None:
    changed = record({"name": "a", "type": "string"})
    assert check_compatibility(CompatibilityLevel.NONE, changed, [(1, V2)]) == []
    [problem] = check_compatibility(CompatibilityLevel.BACKWARD, changed, [(1, V2)])
    assert "TYPE_MISMATCH" in problem
    assert "/fields/0" in problem


def test_no_history_is_always_compatible() -> None:
    assert check_compatibility(CompatibilityLevel.FULL_TRANSITIVE, V1, []) == []


def test_levels_parse_in_any_case() -> None:
    assert parse_level("full_transitive") is CompatibilityLevel.FULL_TRANSITIVE
    assert parse_level("Backward") is CompatibilityLevel.BACKWARD
    assert parse_level("SIDEWAYS") is None
    assert parse_level(3) is None
    assert CompatibilityLevel.FULL.backward
    assert CompatibilityLevel.FULL.forward
    assert not CompatibilityLevel.NONE.backward
    assert not CompatibilityLevel.NONE.forward
