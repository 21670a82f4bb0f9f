"""Schema texts: validation, the canonical stored text, normalisation, references."""

from __future__ import annotations

import json

import pytest

from mesh.registry.errors import ApiError
from mesh.registry.schema import Reference, compact_json, parse_schema

A_STRING = {"name": "s", "type": "string"}
HOME_ADDRESS = {"name": "home", "type": "Address"}
RECORD = {"type": "record", "name": "A", "fields": [{"name": "a", "type": {"type": "string"}}]}


def test_whitespace_does_not_change_the_stored_text() -> None:
    compact = parse_schema(json.dumps(RECORD, separators=(",", ":")))
    spaced = parse_schema(json.dumps(RECORD, indent=4))
    assert compact.text == spaced.text == json.dumps(RECORD, separators=(",", ":"))
    assert compact.identity == spaced.identity


def test_normalize_folds_equivalent_spellings() -> None:
    simple = dict(RECORD, fields=[{"name": "a", "type": "string"}])
    assert parse_schema(json.dumps(RECORD)).text != parse_schema(json.dumps(simple)).text
    assert (
        parse_schema(json.dumps(RECORD), normalize=True).text
        == parse_schema(json.dumps(simple), normalize=True).text
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        "42",
        "{}",
        '{"type": "nope"}',
        '{"type": "record", "name": "A"}',
        '{"type": "record", "name": "1A", "fields": []}',
        '{"type": "record", "name": "A", "fields": 5}',
        '{"type": "record", "name": "A", "fields": [{"type": "int"}]}',
        '{"type": "enum", "name": "E", "symbols": ["a", "a"]}',
        '{"type": "fixed", "name": "F", "size": -1}',
        '["null", "null"]',
        "[" * 5000 + "]" * 5000,
    ],
)
def test_invalid_schemas_are_42201(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_schema(text)
    assert (caught.value.status, caught.value.code) == (422, 42201)


def test_named_types_come_from_dependencies() -> None:
    address = json.dumps(
        {"type": "record", "name": "Address", "namespace": "n", "fields": [A_STRING]}
    )
    user = json.dumps(
        {"type": "record", "name": "User", "namespace": "n", "fields": [HOME_ADDRESS]}
    )
    with pytest.raises(ApiError):
        parse_schema(user)
    ref = Reference(name="n.Address", subject="address", version=1)
    parsed = parse_schema(user, references=[ref], dependencies=[address])
    assert parsed.identity == (compact_json(json.loads(user)), (ref,))
    normalized = json.loads(parse_schema(user, dependencies=[address], normalize=True).text)
    assert normalized["fields"][0]["type"] == "n.Address"  # named, not inlined
