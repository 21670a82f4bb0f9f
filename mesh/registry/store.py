"""The registry's state in memory, rebuilt from the ``_schemas`` topic and changed only by it.

The reader applies each record in log order (:meth:`Store.apply`); the state is a function
of the last value per key, so replaying the whole log, as Tansu (which never compacts)
makes us do, gives what a compacted topic would. Everything else only reads. All calls
happen on the event loop's thread, so nothing here locks.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NewType

import avro.schema

from mesh.registry.errors import ApiError
from mesh.registry.records import (
    Announcement,
    ConfigChange,
    IdFloor,
    ModeChange,
    Record,
    SchemaDrop,
    SchemaPut,
)
from mesh.registry.schema import Reference, parse_schema
from mesh.schema.compatibility import DEFAULT_LEVEL, CompatibilityLevel

__all__ = [
    "Primary",
    "SchemaId",
    "Store",
    "StoredSchema",
    "SubjectVersion",
    "Version",
    "parse_version",
]

SchemaId = NewType("SchemaId", int)
Version = NewType("Version", int)

MAX_VERSION = 2**31 - 1


def parse_version(text: str) -> Version | None:
    """A version from a URL: a number in [1, 2^31-1], or None for ``latest`` / ``-1``."""
    if text.lower() == "latest" or text == "-1":
        return None
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_VERSION:
        return Version(int(text))
    raise ApiError.invalid_version(text)


@dataclass(frozen=True, slots=True)
class StoredSchema:
    """A registered schema; ``body`` is the precomputed answer to ``GET /schemas/ids/{id}``."""

    schema_id: SchemaId
    text: str
    references: tuple[Reference, ...]
    body: bytes

    @property
    def identity(self) -> tuple[str, tuple[Reference, ...]]:
        return self.text, self.references


@dataclass(frozen=True, slots=True)
class SubjectVersion:
    subject: str
    version: Version
    schema: StoredSchema
    deleted: bool

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "subject": self.subject,
            "version": self.version,
            "id": self.schema.schema_id,
            "schema": self.schema.text,
        }
        if self.schema.references:
            data["references"] = [ref.to_json() for ref in self.schema.references]
        return data


@dataclass(frozen=True, slots=True)
class Primary:
    """The latest ``PRIMARY`` record: who writes now, and its epoch (that record's offset)."""

    epoch: int
    url: str
    node: str


class Store:
    """Subjects, versions, schema ids, compatibility configs, mode and primary epochs."""

    def __init__(self) -> None:
        self._subjects: dict[str, dict[Version, SubjectVersion]] = {}
        self._schemas: dict[SchemaId, StoredSchema] = {}
        self._ids: dict[tuple[str, tuple[Reference, ...]], SchemaId] = {}
        self._usages: dict[SchemaId, set[tuple[str, Version]]] = {}
        self._parsed: dict[SchemaId, avro.schema.Schema] = {}
        self._configs: dict[str | None, CompatibilityLevel] = {}
        self._epochs: list[int] = []
        self.mode = "READWRITE"
        self.max_id = 0
        self.primary: Primary | None = None

    # --- changes, applied by the reader in log order ------------------------------------

    def apply(self, record: Record, *, offset: int) -> None:
        match record:
            case SchemaPut():
                self._put_version(record)
            case SchemaDrop(subject=subject, version=version):
                self._drop_version(subject, Version(version))
            case ConfigChange(subject=subject, level=None):
                self._configs.pop(subject, None)
            case ConfigChange(subject=subject, level=level) if level is not None:
                self._configs[subject] = level
            case ModeChange(mode=mode):
                self.mode = mode
            case IdFloor(schema_id=schema_id):
                self.max_id = max(self.max_id, schema_id)
            case Announcement(url=url, node=node):
                self._epochs.append(offset)
                self.primary = Primary(epoch=offset, url=url, node=node)

    def is_valid(self, *, epoch: int, offset: int) -> bool:
        """True when the record at *offset* was written by the primary of its time.

        That is when *epoch* is the offset of the last ``PRIMARY`` record before *offset*.
        """
        index = bisect.bisect_left(self._epochs, offset) - 1
        return index >= 0 and self._epochs[index] == epoch

    def _put_version(self, record: SchemaPut) -> None:
        subject, version = record.subject, Version(record.version)
        self._drop_version(subject, version)
        schema_id = SchemaId(record.schema_id)
        schema = self._schemas.get(schema_id)
        if schema is None or schema.identity != (record.text, record.references):
            schema = StoredSchema(
                schema_id=schema_id,
                text=record.text,
                references=record.references,
                body=_schema_body(record.text, record.references),
            )
            self._schemas[schema_id] = schema
            self._parsed.pop(schema_id, None)
            self._ids[schema.identity] = schema_id
        self._subjects.setdefault(subject, {})[version] = SubjectVersion(
            subject=subject, version=version, schema=schema, deleted=record.deleted
        )
        self._usages.setdefault(schema_id, set()).add((subject, version))
        self.max_id = max(self.max_id, schema_id)

    def _drop_version(self, subject: str, version: Version) -> None:
        versions = self._subjects.get(subject, {})
        entry = versions.pop(version, None)
        if not versions:
            self._subjects.pop(subject, None)
        if entry is None:
            return
        schema_id = entry.schema.schema_id
        usages = self._usages.get(schema_id, set())
        usages.discard((subject, version))
        if not usages:  # no version left, not even soft-deleted: the id is gone
            self._usages.pop(schema_id, None)
            self._parsed.pop(schema_id, None)
            dropped = self._schemas.pop(schema_id, None)
            if dropped is not None and self._ids.get(dropped.identity) == schema_id:
                del self._ids[dropped.identity]

    # --- queries -----------------------------------------------------------------------

    def schema_body(self, schema_id: int) -> bytes | None:
        """The answer to ``GET /schemas/ids/{id}``: the hot path, one dict lookup."""
        schema = self._schemas.get(SchemaId(schema_id))
        return None if schema is None else schema.body

    def schema(self, schema_id: int) -> StoredSchema:
        try:
            return self._schemas[SchemaId(schema_id)]
        except KeyError:
            raise ApiError.schema_not_found(f"Schema {schema_id} not found") from None

    def id_for(self, identity: tuple[str, tuple[Reference, ...]]) -> SchemaId | None:
        return self._ids.get(identity)

    def usages(self, schema_id: int, *, deleted: bool) -> list[SubjectVersion]:
        """Every subject version using *schema_id*, by subject then version."""
        entries = (
            self._subjects[subject][version]
            for subject, version in self._usages.get(SchemaId(schema_id), ())
        )
        return sorted(
            (entry for entry in entries if deleted or not entry.deleted),
            key=lambda entry: (entry.subject, entry.version),
        )

    def subjects(self, *, deleted: bool) -> list[str]:
        return sorted(
            subject
            for subject, versions in self._subjects.items()
            if deleted or any(not entry.deleted for entry in versions.values())
        )

    def versions(self, subject: str, *, deleted: bool) -> list[SubjectVersion]:
        """The versions of *subject*, oldest first; ApiError 40401 when there are none."""
        entries = [
            entry
            for _, entry in sorted(self._subjects.get(subject, {}).items())
            if deleted or not entry.deleted
        ]
        if not entries:
            raise ApiError.subject_not_found(subject)
        return entries

    def version(self, subject: str, version: Version | None, *, deleted: bool) -> SubjectVersion:
        """Version *version* of *subject*, or its latest when *version* is None."""
        entries = self.versions(subject, deleted=deleted)
        if version is None:
            return entries[-1]
        for entry in entries:
            if entry.version == version:
                return entry
        raise ApiError.version_not_found(subject, version)

    def find(
        self, subject: str, identity: tuple[str, tuple[Reference, ...]], *, deleted: bool
    ) -> SubjectVersion | None:
        """The newest version of *subject* holding the schema *identity*."""
        for entry in reversed(self._subjects.get(subject, {}).values()):
            if entry.schema.identity == identity and (deleted or not entry.deleted):
                return entry
        return None

    def next_version(self, subject: str) -> Version:
        """Versions are never reused while a soft-deleted one remains."""
        return Version(max(self._subjects.get(subject, {}), default=0) + 1)

    def next_id(self) -> SchemaId:
        return SchemaId(self.max_id + 1)

    def config(self, subject: str | None) -> CompatibilityLevel | None:
        return self._configs.get(subject)

    def compatibility(self, subject: str | None) -> CompatibilityLevel:
        """The level that applies to *subject*: its own, else the global one, else BACKWARD."""
        return self._configs.get(subject) or self._configs.get(None) or DEFAULT_LEVEL

    def referenced_by(self, subject: str, version: int) -> list[SchemaId]:
        """Ids of schemas with a live version that take a type from *subject* *version*."""
        return sorted(
            schema_id
            for schema_id, schema in self._schemas.items()
            if any(ref.subject == subject and ref.version == version for ref in schema.references)
            and self.usages(schema_id, deleted=False)
        )

    def dependencies(self, references: Sequence[Reference]) -> list[str]:
        """Texts of the schemas *references* need, transitively, each before its users."""
        ordered: dict[tuple[str, int], str] = {}

        def visit(refs: Iterable[Reference], seen: tuple[tuple[str, int], ...]) -> None:
            for ref in refs:
                key = (ref.subject, ref.version)
                if key in ordered:
                    continue
                if key in seen:
                    raise ApiError.invalid_schema(f"Circular schema reference via {ref.subject}")
                try:
                    entry = self.version(ref.subject, Version(ref.version), deleted=True)
                except ApiError:
                    raise ApiError.invalid_schema(
                        f"Invalid reference {ref.name!r}: subject '{ref.subject}' "
                        f"version {ref.version} not found"
                    ) from None
                visit(entry.schema.references, (*seen, key))
                ordered[key] = entry.schema.text

        visit(references, ())
        return list(ordered.values())

    def parsed(self, schema: StoredSchema) -> avro.schema.Schema:
        """The parsed form of a stored schema, cached: compatibility checks need it."""
        cached = self._parsed.get(schema.schema_id)
        if cached is None:
            dependencies = self.dependencies(schema.references)
            cached = parse_schema(schema.text, dependencies=dependencies).parsed
            self._parsed[schema.schema_id] = cached
        return cached


def _schema_body(text: str, references: tuple[Reference, ...]) -> bytes:
    data: dict[str, object] = {"schema": text}
    if references:
        data["references"] = [ref.to_json() for ref in references]
    return json.dumps(data).encode()
