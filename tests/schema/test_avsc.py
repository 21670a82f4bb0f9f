"""Invalid .avsc files name the file, the line and the reason; references order the files."""

from __future__ import annotations

import json

import pytest

from mesh.schema.avsc import AvscError, load_schemas


def pretty(*fields: dict[str, object], name: str = "A") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": "n", "fields": list(fields)}, indent=2
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{\n  "type": "record",\n  "name": "A"\n  "fields": []\n}',
            "f.avsc:4: not valid JSON: Expecting ',' delimiter (column 3)",
        ),
        (
            pretty(
                {"name": "a", "type": "int"},
                {"name": "x", "type": ["null", {"type": "array", "items": "Nope"}]},
            ),
            "f.avsc:10: field 'x': unknown type 'n.Nope'",
        ),
        (
            pretty({"name": "x", "type": "string"}, {"name": "x", "type": "int"}),
            "f.avsc:10: field 'x' is declared twice",
        ),
        (
            pretty(
                {"name": "y", "type": "int", "default": 1},
                {"name": "x", "type": "int", "default": "a"},
            ),
            'f.avsc:11: field \'x\': default "a" does not match its type "int"',
        ),
    ],
    ids=["bad-json", "unknown-type", "duplicate-field", "wrong-default"],
)
def test_invalid_files_give_file_line_and_reason(text: str, message: str) -> None:
    with pytest.raises(AvscError) as caught:
        load_schemas({"f.avsc": text})
    assert str(caught.value) == message


def test_named_types_across_files_come_dependencies_first() -> None:
    currency = json.dumps(
        {"type": "enum", "name": "Currency", "namespace": "c", "symbols": ["EUR"]}
    )
    money = pretty({"name": "currency", "type": "c.Currency"}, name="Money")
    order = pretty(
        {"name": "price", "type": "Money"}, {"name": "c", "type": "c.Currency"}, name="Order"
    )
    loaded = load_schemas({"a.avsc": order, "b.avsc": money, "c.avsc": currency})
    assert [(a.path, a.name, a.depends_on) for a in loaded] == [
        ("c.avsc", "c.Currency", ()),
        ("b.avsc", "n.Money", ("c.avsc",)),
        ("a.avsc", "n.Order", ("b.avsc", "c.avsc")),
    ]


def test_a_cycle_across_files_is_reported() -> None:
    a = pretty({"name": "b", "type": ["null", "n.B"]}, name="A")
    b = pretty({"name": "a", "type": ["null", "n.A"]}, name="B")
    with pytest.raises(AvscError, match="refer to each other across files"):
        load_schemas({"a.avsc": a, "b.avsc": b})
