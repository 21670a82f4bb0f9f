"""The _schemas record format: what is written decodes to the same record."""

from __future__ import annotations

import json

import pytest

from mesh.registry import records
from mesh.registry.schema import Reference
from mesh.schema.compatibility import CompatibilityLevel


def test_schema_records_round_trip_in_confluent_shape() -> None:
    put = records.SchemaPut(
        subject="s",
        version=2,
        schema_id=7,
        text='"int"',
        references=(Reference("n.T", "t", 1),),
        deleted=True,
    )
    key, value = records.schema_put(put)
    assert json.loads(key) == {"keytype": "SCHEMA", "subject": "s", "version": 2, "magic": 1}
    assert json.loads(value or b"")["id"] == 7
    assert records.decode(key, value) == put
    assert records.decode(*records.schema_drop(subject="s", version=2)) == records.SchemaDrop(
        subject="s", version=2
    )


def test_config_mode_and_announcements_round_trip() -> None:
    for subject in (None, "s"):
        for level in (None, CompatibilityLevel.FULL):
            change = records.config_change(subject=subject, level=level)
            assert records.decode(*change) == records.ConfigChange(subject=subject, level=level)
    assert records.decode(*records.mode_change(mode="READONLY")) == records.ModeChange(
        mode="READONLY"
    )
    first, second = records.announcement(url="u", node="n"), records.announcement(url="u", node="n")
    assert first[0] != second[0]  # unique keys: compaction never drops an announcement
    assert records.decode(*first) == records.Announcement(url="u", node="n")


def test_other_kinds_are_skipped_and_garbage_is_refused() -> None:
    assert records.decode(b'{"keytype":"NOOP","magic":0}', None) is None
    key, _ = records.schema_drop(subject="s", version=1)
    json_schema = b'{"subject":"s","version":1,"id":1,"schema":"{}","schemaType":"JSON"}'
    assert records.decode(key, json_schema) is None
    garbage = [
        (None, b"{}"),
        (b"nope", None),
        (b'{"keytype":"SCHEMA"}', b"{}"),
        (b"[1]", None),
        (key, b"[1]"),
        (key, b'{"version": 1, "id": "x", "schema": "s"}'),
    ]
    for key_bytes, value in garbage:
        with pytest.raises((ValueError, KeyError)):
            records.decode(key_bytes, value)
