"""The registry's operations: reads from the store, writes through the log on the primary.

A write plans its records against the store, produces them with the primary's epoch and
returns once the registry's own reader has applied them, all under one lock, so the next
write plans against a state that includes this one. When a write fails its records may
still land later, so the next write first renews the epoch (see
:mod:`mesh.registry.election`), which puts them in the store or makes them invalid. On a
registry that is not the primary a write raises :class:`NotPrimaryError` before touching
anything; the API forwards it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mesh.registry import records
from mesh.registry.election import Election
from mesh.registry.errors import ApiError, NotPrimaryError
from mesh.registry.reader import Reader
from mesh.registry.records import KeyValue, Record
from mesh.registry.schema import SUPPORTED_TYPES, ParsedSchema, Reference, parse_schema
from mesh.registry.store import SchemaId, Store, SubjectVersion, Version
from mesh.registry.writer import Writer
from mesh.schema.compatibility import CompatibilityLevel, check_compatibility

__all__ = ["Registry", "SchemaRequest"]

log = logging.getLogger(__name__)

#: Kafka's default ``max.message.bytes`` is about 1 MB; leave room for the key and JSON.
MAX_SCHEMA_CHARS = 900_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaRequest:
    """The body of a register, lookup or compatibility request."""

    text: str
    schema_type: str = "AVRO"
    references: tuple[Reference, ...] = ()
    #: IMPORT mode only: keep the id and version the schema had elsewhere.
    schema_id: int | None = None
    version: int | None = None


class Registry:
    def __init__(
        self,
        *,
        store: Store,
        reader: Reader,
        writer: Writer,
        election: Election,
        write_timeout_s: float,
    ) -> None:
        self._store = store
        self._reader = reader
        self._writer = writer
        self._election = election
        self._write_timeout_s = write_timeout_s
        self._lock = asyncio.Lock()
        #: The epoch of a failed write: no further write under it (see :meth:`_primary`).
        self._failed_epoch: int | None = None
        self._repairs: set[asyncio.Task[None]] = set()

    # --- reads ---------------------------------------------------------------------------

    def parse(self, request: SchemaRequest, *, normalize: bool) -> ParsedSchema:
        """The schema of *request*, validated; ApiError 42201 / 42209 when it cannot be."""
        if request.schema_type.upper() not in SUPPORTED_TYPES:
            raise ApiError.invalid_schema(
                f"Unsupported schema type {request.schema_type!r}: this registry stores AVRO only"
            )
        if len(request.text) > MAX_SCHEMA_CHARS:
            raise ApiError.schema_too_large()
        dependencies = self._store.dependencies(request.references)
        return parse_schema(
            request.text,
            references=request.references,
            dependencies=dependencies,
            normalize=normalize,
        )

    def lookup(
        self, subject: str, request: SchemaRequest, *, normalize: bool, deleted: bool
    ) -> SubjectVersion:
        """The version of *subject* holding the schema of *request* (``POST /subjects/{s}``)."""
        self._store.versions(subject, deleted=deleted)  # 40401 before 42201, like Confluent
        schema = self.parse(request, normalize=normalize)
        found = self._existing(subject, schema, normalize=normalize, deleted=deleted)
        if found is None:
            raise ApiError.schema_not_found()
        return found

    def check(
        self, subject: str, version: Version | None, request: SchemaRequest, *, every: bool
    ) -> list[str]:
        """Why *request* is incompatible with *version* (None: the latest) or, when *every*,
        with the versions the subject's level compares against. Empty: compatible."""
        schema = self.parse(request, normalize=False)
        level = self._store.compatibility(subject)
        try:
            live = self._store.versions(subject, deleted=False)
        except ApiError:  # no versions yet: anything is compatible with the latest
            live = []
        if version is None:
            targets = live if every else live[-1:]
        else:  # Confluent answers 40402 for a missing numbered version, of any subject
            targets = [entry for entry in live if entry.version == version]
            if not targets:
                raise ApiError.version_not_found(subject, version)
        existing = [(entry.version, self._store.parsed(entry.schema)) for entry in targets]
        return check_compatibility(level, schema.parsed, existing)

    def _existing(
        self, subject: str, schema: ParsedSchema, *, normalize: bool, deleted: bool
    ) -> SubjectVersion | None:
        """The newest version of *subject* holding *schema*; with *normalize*, also one whose
        normalized form is *schema* (it may have been registered without normalizing)."""
        found = self._store.find(subject, schema.identity, deleted=deleted)
        if found is not None or not normalize:
            return found
        try:
            entries = self._store.versions(subject, deleted=deleted)
        except ApiError:
            return None
        for entry in reversed(entries):
            dependencies = self._store.dependencies(entry.schema.references)
            stored = parse_schema(entry.schema.text, dependencies=dependencies, normalize=True)
            if (stored.text, entry.schema.references) == schema.identity:
                return entry
        return None

    # --- writes --------------------------------------------------------------------------

    async def register(self, subject: str, request: SchemaRequest, *, normalize: bool) -> int:
        """Register the schema under *subject*; return its id (``POST .../versions``)."""
        schema = self.parse(request, normalize=normalize)
        found = self._existing(subject, schema, normalize=normalize, deleted=False)
        if found is not None and request.schema_id in (None, found.schema.schema_id):
            return found.schema.schema_id  # already there: no write, any registry answers
        async with self._primary() as epoch:
            found = self._existing(subject, schema, normalize=normalize, deleted=False)
            if found is not None and request.schema_id in (None, found.schema.schema_id):
                return found.schema.schema_id
            schema_id, version = self._plan_registration(subject, schema, request)
            record = records.SchemaPut(
                subject=subject,
                version=version,
                schema_id=schema_id,
                text=schema.text,
                references=schema.references,
                deleted=False,
            )
            await self._write(epoch, [records.schema_put(record)])
            log.info("registered %s version %d (id %d)", subject, version, schema_id)
            return schema_id

    def _plan_registration(
        self, subject: str, schema: ParsedSchema, request: SchemaRequest
    ) -> tuple[SchemaId, Version]:
        mode = self._store.mode
        if mode == "READONLY":
            raise ApiError.not_permitted(f"Subject {subject} is in read-only mode")
        if mode == "IMPORT":
            return self._plan_import(subject, schema, request)
        if request.schema_id is not None or request.version is not None:
            raise ApiError.not_permitted("An explicit id or version needs IMPORT mode")
        try:
            live = self._store.versions(subject, deleted=False)
        except ApiError:
            live = []
        existing = [(entry.version, self._store.parsed(entry.schema)) for entry in live]
        problems = check_compatibility(self._store.compatibility(subject), schema.parsed, existing)
        if problems:
            raise ApiError.incompatible(
                "Schema being registered is incompatible with an earlier schema for subject "
                f'"{subject}", details: {problems}'
            )
        schema_id = self._store.id_for(schema.identity) or self._store.next_id()
        return schema_id, self._store.next_version(subject)

    def _plan_import(
        self, subject: str, schema: ParsedSchema, request: SchemaRequest
    ) -> tuple[SchemaId, Version]:
        """IMPORT mode: keep the id and version given, skip compatibility checks."""
        taken = self._store.id_for(schema.identity)
        schema_id = taken or self._store.next_id()
        if request.schema_id is not None:
            schema_id = SchemaId(request.schema_id)
            if taken not in (None, schema_id):
                raise ApiError.not_permitted(f"This schema already has id {taken}")
            if taken is None and self._store.schema_body(schema_id) is not None:
                raise ApiError.not_permitted(f"Schema id {schema_id} belongs to another schema")
        version = self._store.next_version(subject)
        if request.version is not None:
            if request.version < version:
                raise ApiError.not_permitted(f"Version {request.version} of {subject} is taken")
            version = Version(request.version)
        return schema_id, version

    async def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        """Soft-delete every live version, or permanently delete a soft-deleted subject."""
        async with self._primary() as epoch:
            self._refuse_in_readonly(subject)
            entries = self._store.versions(subject, deleted=True)
            live = [entry for entry in entries if not entry.deleted]
            if permanent and live:
                raise ApiError.subject_not_soft_deleted(subject)
            if not permanent and not live:
                raise ApiError.subject_soft_deleted(subject)
            targets = entries if permanent else live
            self._refuse_referenced(targets)
            await self._write(epoch, self._deletion(targets, permanent=permanent))
            return [entry.version for entry in targets]

    async def delete_version(
        self, subject: str, version: Version | None, *, permanent: bool
    ) -> int:
        """Soft-delete a version, or permanently delete a soft-deleted one."""
        async with self._primary() as epoch:
            self._refuse_in_readonly(subject)
            latest_live = version is None and not permanent
            entry = self._store.version(subject, version, deleted=not latest_live)
            if permanent and not entry.deleted:
                raise ApiError.version_not_soft_deleted(subject, entry.version)
            if not permanent and entry.deleted:
                raise ApiError.version_soft_deleted(subject, entry.version)
            self._refuse_referenced([entry])
            await self._write(epoch, self._deletion([entry], permanent=permanent))
            return entry.version

    async def set_config(self, subject: str | None, level: CompatibilityLevel) -> None:
        async with self._primary() as epoch:
            self._refuse_in_readonly(subject)
            await self._write(epoch, [records.config_change(subject=subject, level=level)])

    async def delete_config(self, subject: str | None) -> CompatibilityLevel:
        """Drop the level of *subject* (None: the global one); return the level dropped."""
        async with self._primary() as epoch:
            self._refuse_in_readonly(subject)
            current = self._store.config(subject)
            if current is None and subject is not None:
                raise ApiError.subject_not_found(subject)
            await self._write(epoch, [records.config_change(subject=subject, level=None)])
            return current or self._store.compatibility(None)

    async def set_mode(self, mode: str) -> None:
        async with self._primary() as epoch:
            await self._write(epoch, [records.mode_change(mode=mode)])

    def repair(self, rejected: Record) -> None:
        """Re-write the valid value of a key an invalid record was written to (see election)."""
        if self._election.epoch is None:
            return
        task = asyncio.get_running_loop().create_task(self._repair(rejected))
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def _repair(self, rejected: Record) -> None:
        try:
            async with self._primary() as epoch:
                await self._write(epoch, [self._current_value(rejected)])
        except (ApiError, NotPrimaryError) as exc:
            log.warning("could not re-write a key shadowed by a former primary: %r", exc)

    def _current_value(self, record: Record) -> KeyValue:
        match record:
            case (
                records.SchemaPut(subject=subject, version=version)
                | records.SchemaDrop(subject=subject, version=version)
            ):
                try:
                    entry = self._store.version(subject, Version(version), deleted=True)
                except ApiError:
                    return records.schema_drop(subject=subject, version=version)
                return records.schema_put(_put(entry, deleted=entry.deleted))
            case records.ConfigChange(subject=subject):
                return records.config_change(subject=subject, level=self._store.config(subject))
            case records.ModeChange():
                return records.mode_change(mode=self._store.mode)
            case _:
                return records.id_floor(schema_id=self._store.max_id)

    # --- helpers -------------------------------------------------------------------------

    @asynccontextmanager
    async def _primary(self) -> AsyncIterator[int]:
        """Hold the write lock as the primary; yield the epoch to tag records with."""
        async with self._lock:
            epoch = self._election.epoch
            if epoch is not None and epoch == self._failed_epoch:
                epoch = await self._election.renew()
            if epoch is None:
                raise NotPrimaryError
            yield epoch

    async def _write(self, epoch: int, batch: Sequence[KeyValue]) -> None:
        try:
            offsets = await self._writer.produce(batch, epoch=epoch)
            await self._reader.wait_for(offsets[-1] + 1, timeout_s=self._write_timeout_s)
        except BaseException:  # cancelled too: the records may be in the log, or land later
            self._failed_epoch = epoch
            raise
        if not all(self._store.is_valid(epoch=epoch, offset=offset) for offset in offsets):
            raise NotPrimaryError  # another registry became primary first: forward the request

    def _refuse_in_readonly(self, subject: str | None) -> None:
        if self._store.mode == "READONLY":
            raise ApiError.not_permitted(f"Subject {subject or '(global)'} is in read-only mode")

    def _refuse_referenced(self, entries: Sequence[SubjectVersion]) -> None:
        for entry in entries:
            if self._store.referenced_by(entry.subject, entry.version):
                raise ApiError.reference_exists(entry.subject, entry.version)

    def _deletion(self, entries: Sequence[SubjectVersion], *, permanent: bool) -> list[KeyValue]:
        if not permanent:
            return [records.schema_put(_put(entry, deleted=True)) for entry in entries]
        batch = [records.schema_drop(subject=e.subject, version=e.version) for e in entries]
        return [*batch, records.id_floor(schema_id=self._store.max_id)]


def _put(entry: SubjectVersion, *, deleted: bool) -> records.SchemaPut:
    return records.SchemaPut(
        subject=entry.subject,
        version=entry.version,
        schema_id=entry.schema.schema_id,
        text=entry.schema.text,
        references=entry.schema.references,
        deleted=deleted,
    )
