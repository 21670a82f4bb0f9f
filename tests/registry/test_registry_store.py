"""The in-memory store: applying records, soft deletes, ids, versions, epochs."""

from __future__ import annotations

import json

import pytest

from mesh.registry.errors import ApiError
from mesh.registry.records import Announcement, ConfigChange, IdFloor, SchemaDrop, SchemaPut
from mesh.registry.schema import Reference
from mesh.registry.store import Store, Version, parse_version
from mesh.schema.compatibility import CompatibilityLevel


def put(
    store: Store,
    subject: str,
    version: int,
    schema_id: int,
    text: str = '"int"',
    *,
    deleted: bool = False,
    references: tuple[Reference, ...] = (),
) -> None:
    record = SchemaPut(
        subject=subject,
        version=version,
        schema_id=schema_id,
        text=text,
        references=references,
        deleted=deleted,
    )
    store.apply(record, offset=0)


def test_versions_ids_and_soft_deletes() -> None:
    store = Store()
    put(store, "s", 1, 1, '"int"')
    put(store, "s", 2, 2, '"long"')
    put(store, "t", 1, 1, '"int"')
    assert [v.version for v in store.versions("s", deleted=False)] == [1, 2]
    assert store.version("s", None, deleted=False).schema.schema_id == 2
    assert store.id_for(('"long"', ())) == 2
    assert [(u.subject, u.version) for u in store.usages(1, deleted=False)] == [("s", 1), ("t", 1)]
    assert json.loads(store.schema_body(1) or b"") == {"schema": '"int"'}

    put(store, "s", 2, 2, '"long"', deleted=True)
    assert store.version("s", None, deleted=False).version == 1  # latest live
    assert store.version("s", None, deleted=True).version == 2
    assert store.next_version("s") == 3  # soft-deleted versions are not reused
    assert store.schema_body(2) is not None  # still decodable by id
    assert store.find("s", ('"long"', ()), deleted=False) is None
    assert store.find("s", ('"long"', ()), deleted=True) is not None

    put(store, "t", 1, 1, deleted=True)
    assert store.subjects(deleted=False) == ["s"]
    assert store.subjects(deleted=True) == ["s", "t"]
    with pytest.raises(ApiError) as caught:
        store.versions("t", deleted=False)
    assert caught.value.code == 40401
    with pytest.raises(ApiError) as caught:
        store.version("s", Version(9), deleted=True)
    assert caught.value.code == 40402


def test_permanent_delete_frees_the_id_but_never_lowers_the_next_one() -> None:
    store = Store()
    put(store, "s", 1, 5, '"long"')
    store.apply(SchemaDrop(subject="s", version=1), offset=1)
    assert store.schema_body(5) is None
    assert store.id_for(('"long"', ())) is None
    assert store.subjects(deleted=True) == []
    assert store.next_id() == 6
    store.apply(IdFloor(schema_id=40), offset=2)  # survives compaction of the dropped versions
    assert store.next_id() == 41


def test_compatibility_falls_back_to_global_then_backward() -> None:
    store = Store()
    assert store.compatibility("s") is CompatibilityLevel.BACKWARD
    store.apply(ConfigChange(subject=None, level=CompatibilityLevel.FULL), offset=0)
    store.apply(ConfigChange(subject="s", level=CompatibilityLevel.NONE), offset=1)
    assert store.compatibility("s") is CompatibilityLevel.NONE
    assert store.compatibility("other") is CompatibilityLevel.FULL
    store.apply(ConfigChange(subject="s", level=None), offset=2)
    assert store.config("s") is None
    assert store.compatibility("s") is CompatibilityLevel.FULL


def test_a_record_is_valid_only_in_the_epoch_of_the_last_announcement_before_it() -> None:
    store = Store()
    assert not store.is_valid(epoch=0, offset=1)  # no primary yet
    store.apply(Announcement(url="a", node="A"), offset=10)
    store.apply(Announcement(url="b", node="B"), offset=20)
    assert store.primary is not None
    assert store.primary.url == "b"
    assert store.is_valid(epoch=10, offset=15)
    assert not store.is_valid(epoch=10, offset=25)  # the former primary, too late
    assert store.is_valid(epoch=20, offset=25)
    assert not store.is_valid(epoch=20, offset=15)
    assert not store.is_valid(epoch=12, offset=25)  # not an announcement at all


def test_references_resolve_transitively_in_dependency_order() -> None:
    store = Store()
    put(store, "base", 1, 1, "BASE")
    put(store, "mid", 1, 2, "MID", references=(Reference("Base", "base", 1),))
    deps = store.dependencies([Reference("Mid", "mid", 1), Reference("Base", "base", 1)])
    assert deps == ["BASE", "MID"]
    assert store.referenced_by("base", 1) == [2]
    with pytest.raises(ApiError) as caught:
        store.dependencies([Reference("X", "missing", 1)])
    assert caught.value.code == 42201


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("latest", None), ("-1", None)])
def test_versions_in_urls(text: str, expected: int | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["0", "-2", "1.0", "x", "2147483648", "\u0661"])
def test_invalid_versions_are_42202(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_version(text)
    assert caught.value.code == 42202
