"""Subjects in a schema registry: register ``schemas/``, list, show and diff versions.

Registration walks the ``.avsc`` files dependencies first, so a file using another file's
named type is registered with a reference to the version its dependency got. It is
idempotent: a schema the subject already holds is looked up, not registered again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mesh.errors import InputError, RegistryError, SchemaError
from mesh.schema.avsc import Avsc
from mesh.schema.check import Levels, Naming
from mesh.schema.files import diff_schemas

__all__ = [
    "Registration",
    "SubjectInfo",
    "diff_versions",
    "list_subjects",
    "register_schemas",
    "show_version",
]

T = TypeVar("T")

RegistrationState = Literal["unchanged", "registered", "would register"]


@dataclass(frozen=True)
class Registration:
    subject: str
    path: str
    state: RegistrationState
    version: int | None = None
    schema_id: int | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubjectInfo:
    subject: str
    versions: tuple[int, ...]
    latest_id: int


def register_schemas(
    client: SchemaRegistryClient,
    schemas: Sequence[Avsc],
    *,
    naming: Naming,
    levels: Levels,
    dry_run: bool = False,
    progress: Callable[[Registration], None] = lambda _r: None,
) -> list[Registration]:
    """Register each of *schemas* (in the order given: dependencies first) under its subject.

    A subject whose level is declared in ``schemas/compatibility.toml`` gets that level
    first, so the registry judges the change as ``mesh schema check`` did.
    """
    subjects = naming.subjects(schemas)
    done: dict[str, Registration] = {}
    for avsc in schemas:
        subject = subjects[avsc.name]
        references = [
            SchemaReference(
                name=dependency.name,
                subject=subjects[dependency.name],
                version=done[dependency.path].version,
            )
            for dependency in (_by_path(schemas, path) for path in avsc.depends_on)
        ]
        schema = Schema(avsc.text, "AVRO", references)
        unresolved = any(r.version is None for r in references)  # a dry run's new dependency
        found = None if unresolved else _call(lambda s=subject, sc=schema: _lookup(client, s, sc))
        labels = tuple(f"{r.subject} v{r.version}" for r in references)
        if found is not None:
            result = Registration(
                subject, avsc.path, "unchanged", found.version, found.schema_id, labels
            )
        elif dry_run:
            result = Registration(subject, avsc.path, "would register", references=labels)
        else:
            declared = levels.subjects.get(subject)
            if declared is not None:
                _call(lambda s=subject, lv=declared: client.set_compatibility(s, lv.value))
            _call(lambda s=subject, sc=schema: client.register_schema(s, sc))
            registered = _call(lambda s=subject, sc=schema: client.lookup_schema(s, sc))
            result = Registration(
                subject, avsc.path, "registered", registered.version, registered.schema_id, labels
            )
        done[avsc.path] = result
        progress(result)
    return list(done.values())


def list_subjects(client: SchemaRegistryClient) -> list[SubjectInfo]:
    """Every subject with live versions, its versions and the id of its latest schema."""
    infos = []
    for subject in sorted(_call(client.get_subjects)):
        versions = tuple(sorted(_call(lambda s=subject: client.get_versions(s))))
        latest = _call(lambda s=subject: client.get_latest_version(s))
        infos.append(SubjectInfo(subject, versions, int(latest.schema_id or 0)))
    return infos


def show_version(
    client: SchemaRegistryClient, subject: str, version: int | None = None
) -> RegisteredSchema:
    """Version *version* of *subject* (None: the latest live one)."""
    if version is None:
        return _call(lambda: client.get_latest_version(subject), subject=subject)
    return _call(lambda: client.get_version(subject, version), subject=subject)


def diff_versions(
    client: SchemaRegistryClient, subject: str, old: int | None = None, new: int | None = None
) -> tuple[int, int, list[str]]:
    """Field-level differences from version *old* to *new* (default: the two latest)."""
    versions = sorted(_call(lambda: client.get_versions(subject), subject=subject))
    new = new or versions[-1]
    if old is None:
        earlier = [v for v in versions if v < new]
        if not earlier:
            raise InputError(f"{subject} has no version before {new} to compare with")
        old = earlier[-1]
    before, after = (show_version(client, subject, v) for v in (old, new))
    differences = diff_schemas(
        _json(before), _json(after), labels=(f"version {old}", f"version {new}")
    )
    return old, new, differences


def _by_path(schemas: Sequence[Avsc], path: str) -> Avsc:
    return next(avsc for avsc in schemas if avsc.path == path)


def _lookup(client: SchemaRegistryClient, subject: str, schema: Schema) -> RegisteredSchema | None:
    try:
        return client.lookup_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:  # no such subject, or not this schema
            return None
        raise


def _json(registered: RegisteredSchema) -> Any:
    return json.loads(registered.schema.schema_str or "null")


def _call(action: Callable[[], T], *, subject: str | None = None) -> T:
    """*action*'s result; a missing subject or version is an InputError, a refused schema
    a SchemaError."""
    try:
        return action()
    except SchemaRegistryError as exc:
        if exc.http_status_code >= 500:
            raise RegistryError(f"schema registry failed: {exc.error_message}") from None
        if exc.http_status_code == 404 and subject is not None:
            raise InputError(f"{subject}: {exc.error_message}") from None
        raise SchemaError(f"the registry refused: {exc.error_message}") from None
    except Exception as exc:  # transport errors: the client's HTTP library's own types
        raise RegistryError(f"schema registry unreachable: {exc!r}") from exc
