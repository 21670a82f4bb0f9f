"""The records of the ``_schemas`` topic: JSON keys and values, Confluent-like, self-describing.

======================================================================  ========================
key                                                                     value
======================================================================  ========================
``{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}``              ``{"subject","version",
                                                                        "id","schema","deleted"
                                                                        [,"references"]}``;
                                                                        null: permanently deleted
``{"keytype":"CONFIG","subject":S|null,"magic":0}``                     ``{"compatibilityLevel"}``;
                                                                        null: back to the default
``{"keytype":"MODE","subject":null,"magic":0}``                         ``{"mode"}``
``{"keytype":"ID_FLOOR","magic":0}``                                    ``{"id"}``: ids up to this
                                                                        were used (survives
                                                                        permanent deletes)
``{"keytype":"PRIMARY","term":T,"magic":0}``                            ``{"url","node"}``: a
                                                                        registry became primary
======================================================================  ========================

Every record a primary writes carries a ``mesh-epoch`` header: the offset of its own
``PRIMARY`` record (see :mod:`mesh.registry.election` for why). ``PRIMARY`` keys are unique
per announcement, so compaction never removes one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from mesh.registry.schema import Reference, compact_json
from mesh.schema.compatibility import CompatibilityLevel, parse_level

__all__ = [
    "EPOCH_HEADER",
    "MODES",
    "Announcement",
    "ConfigChange",
    "IdFloor",
    "KeyValue",
    "ModeChange",
    "Record",
    "SchemaDrop",
    "SchemaPut",
    "announcement",
    "config_change",
    "decode",
    "id_floor",
    "mode_change",
    "schema_drop",
    "schema_put",
]

EPOCH_HEADER = "mesh-epoch"
MODES = ("READWRITE", "READONLY", "IMPORT")

#: One record to produce: key and value bytes (value None: a tombstone).
KeyValue = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaPut:
    subject: str
    version: int
    schema_id: int
    text: str
    references: tuple[Reference, ...]
    deleted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaDrop:
    subject: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigChange:
    subject: str | None
    level: CompatibilityLevel | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChange:
    mode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IdFloor:
    schema_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    url: str
    node: str


Record = SchemaPut | SchemaDrop | ConfigChange | ModeChange | IdFloor | Announcement


def _key(keytype: str, magic: int, **fields: object) -> bytes:
    return compact_json({"keytype": keytype, **fields, "magic": magic}).encode()


def _value(data: dict[str, object]) -> bytes:
    return compact_json(data).encode()


def schema_put(record: SchemaPut) -> KeyValue:
    value: dict[str, object] = {
        "subject": record.subject,
        "version": record.version,
        "id": record.schema_id,
        "schema": record.text,
        "deleted": record.deleted,
    }
    if record.references:
        value["references"] = [ref.to_json() for ref in record.references]
    key = _key("SCHEMA", 1, subject=record.subject, version=record.version)
    return key, _value(value)


def schema_drop(*, subject: str, version: int) -> KeyValue:
    return _key("SCHEMA", 1, subject=subject, version=version), None


def config_change(*, subject: str | None, level: CompatibilityLevel | None) -> KeyValue:
    key = _key("CONFIG", 0, subject=subject)
    return key, None if level is None else _value({"compatibilityLevel": level.value})


def mode_change(*, mode: str) -> KeyValue:
    return _key("MODE", 0, subject=None), _value({"mode": mode})


def id_floor(*, schema_id: int) -> KeyValue:
    return _key("ID_FLOOR", 0), _value({"id": schema_id})


def announcement(*, url: str, node: str) -> KeyValue:
    return _key("PRIMARY", 0, term=uuid.uuid4().hex), _value({"url": url, "node": node})


def decode(key: bytes | None, value: bytes | None) -> Record | None:
    """The record in *key*/*value*; None for kinds this registry does not use (NOOP ...).

    Raises ``ValueError``, ``KeyError``, ``TypeError`` or ``RecursionError`` for a malformed
    record.
    """
    if key is None:
        raise ValueError("record without a key")
    fields = _object(key)
    keytype = fields["keytype"]
    data = None if value is None else _object(value)
    if keytype == "SCHEMA":
        subject, version = str(fields["subject"]), int(fields["version"])
        if data is None:
            return SchemaDrop(subject=subject, version=version)
        if data.get("schemaType", "AVRO") != "AVRO":
            return None
        return SchemaPut(
            subject=subject,
            version=version,
            schema_id=int(data["id"]),
            text=str(data["schema"]),
            references=tuple(
                Reference(name=str(r["name"]), subject=str(r["subject"]), version=int(r["version"]))
                for r in data.get("references") or ()
            ),
            deleted=bool(data.get("deleted", False)),
        )
    if keytype == "CONFIG":
        level = None if data is None else parse_level(data["compatibilityLevel"])
        if data is not None and level is None:
            raise ValueError(f"unknown compatibility level {data['compatibilityLevel']!r}")
        subject = fields.get("subject")
        return ConfigChange(subject=None if subject is None else str(subject), level=level)
    if keytype == "MODE":
        mode = "READWRITE" if data is None else data["mode"]
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        return ModeChange(mode=mode)
    if keytype == "ID_FLOOR" and data is not None:
        return IdFloor(schema_id=int(data["id"]))
    if keytype == "PRIMARY" and data is not None:
        return Announcement(url=str(data["url"]), node=str(data["node"]))
    return None


def _object(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, not {type(data).__name__}")
    return data
