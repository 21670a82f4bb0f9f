"""``mesh schema check``: each ``.avsc`` against the earlier versions of its subject.

The earlier versions come from a git ref (the file as it was there and, for a transitive
level, every version in the history behind it) or from the live versions in a registry
(soft-deleted ones are not live). The decision is :mod:`mesh.schema.compatibility`'s, the same
code the registry runs, at the level declared for the subject in
``schemas/compatibility.toml``::

    default = "BACKWARD"            # every subject not listed below

    [subjects]
    "answers-value" = "FULL_TRANSITIVE"

A subject is named as the runtime names it (:class:`mesh.serde.SubjectStrategy` on the
event type's topic), so the topic of every ``.avsc`` must be known: the project declares
its app (``app = "module:app"`` in ``mesh.toml``) and the app's event types give them. An
``.avsc`` whose topic is unknown is an error, never "new": a subject guessed from the
record name would be one the runtime never writes, and every change to it would pass.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import avro.schema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mesh.errors import InputError, RegistryError
from mesh.event import Event
from mesh.schema.avsc import Avsc, load_schemas
from mesh.schema.compatibility import (
    DEFAULT_LEVEL,
    CompatibilityLevel,
    Incompatibility,
    incompatibilities,
    parse_level,
)
from mesh.serde import SubjectStrategy

__all__ = [
    "LEVELS_FILE",
    "Levels",
    "Naming",
    "Report",
    "SchemaResult",
    "check_against_git",
    "check_against_registry",
    "default_ref",
    "read_schema_dir",
]

LEVELS_FILE = "compatibility.toml"

#: ``unchanged``: same as the latest earlier version; ``new``: no earlier version;
#: ``deleted-in-use``: the file is gone but an event type of that name is still in use.
Status = Literal["unchanged", "compatible", "incompatible", "new", "deleted", "deleted-in-use"]

History = list[tuple[int | str, Avsc]]


@dataclass(frozen=True)
class Levels:
    """The compatibility level of each subject, as declared in ``schemas/compatibility.toml``."""

    default: CompatibilityLevel = DEFAULT_LEVEL
    subjects: Mapping[str, CompatibilityLevel] = field(default_factory=dict)

    @classmethod
    def load(cls, schema_dir: Path) -> Levels:
        path = schema_dir / LEVELS_FILE
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: {exc}") from None
        unknown = data.keys() - {"default", "subjects"}
        if unknown:
            raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        default = _level(data.get("default", DEFAULT_LEVEL.value), f"{path}: default")
        subjects = data.get("subjects", {})
        if not isinstance(subjects, dict):
            raise InputError(f"{path}: [subjects] must be a table of subject = level")
        return cls(
            default,
            {name: _level(value, f"{path}: subject {name!r}") for name, value in subjects.items()},
        )

    def of(self, subject: str) -> CompatibilityLevel:
        return self.subjects.get(subject, self.default)


@dataclass(frozen=True)
class Naming:
    """Registry subjects of schema full names, as the runtime's serde names them."""

    strategy: SubjectStrategy = SubjectStrategy.TOPIC_NAME
    #: The topic of each known event type, by full name (it decides the subject).
    topics: Mapping[str, str] = field(default_factory=dict)
    #: Why a type may be unknown, for the error that names it ("no app is declared").
    source: str = "no app is declared"

    @classmethod
    def of(
        cls, strategy: SubjectStrategy, event_types: Iterable[type[Event]], source: str
    ) -> Naming:
        return cls(strategy, {t.event_type(): t.topic() for t in event_types}, source)

    def subject(self, full_name: str) -> str | None:
        """The subject of *full_name*; None when it depends on a topic no known type has."""
        if self.strategy is SubjectStrategy.RECORD_NAME:
            return full_name
        topic = self.topics.get(full_name)
        return None if topic is None else self.strategy.subject(topic, full_name)

    def subjects(self, schemas: Sequence[Avsc]) -> dict[str, str]:
        """The subject of each of *schemas* by full name; InputError naming every file
        whose subject is unknown.

        A named type that is no event type but is used by other files (a shared record)
        is registered under its full name, as Confluent's serializers name references.
        """
        used = {name for avsc in schemas for name in avsc.uses}
        found: dict[str, str] = {}
        unknown: list[str] = []
        for avsc in schemas:
            subject = self.subject(avsc.name) or (avsc.name if avsc.name in used else None)
            if subject is None:
                unknown.append(f"{avsc.path} ({avsc.name})")
            else:
                found[avsc.name] = subject
        if unknown:
            raise InputError(
                f"cannot tell the registry subject of {', '.join(unknown)} without its "
                f"topic: {self.source}; declare the app that uses it "
                '(app = "module:app" in mesh.toml, or --app) or its module (--module)'
            )
        return found


@dataclass(frozen=True)
class SchemaResult:
    """The verdict for one subject."""

    subject: str
    name: str
    path: str
    level: CompatibilityLevel
    status: Status
    #: The earlier versions compared with (registry versions or commits), oldest first.
    compared_with: tuple[int | str, ...] = ()
    problems: tuple[Incompatibility, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in ("incompatible", "deleted-in-use")

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "name": self.name,
            "path": self.path,
            "level": self.level.value,
            "status": self.status,
            "compared_with": list(self.compared_with),
            "problems": [
                {
                    "direction": p.direction,
                    "version": p.version,
                    "kinds": list(p.kinds),
                    "messages": list(p.messages),
                    "locations": list(p.locations),
                }
                for p in self.problems
            ],
        }


@dataclass(frozen=True)
class Report:
    """Every subject's verdict against one baseline (a git ref or a registry)."""

    baseline: str
    results: tuple[SchemaResult, ...]

    @property
    def failed(self) -> bool:
        return any(result.failed for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "ok": not self.failed,
            "results": [result.to_json() for result in self.results],
        }


def read_schema_dir(schema_dir: Path) -> list[Avsc]:
    """The valid ``.avsc`` files of *schema_dir*, dependencies first (AvscError otherwise)."""
    if not schema_dir.is_dir():
        raise InputError(f"{schema_dir} is not a directory")
    return load_schemas(
        {str(path): path.read_text(encoding="utf-8") for path in schema_dir.glob("*.avsc")}
    )


def default_ref(cwd: Path | None = None) -> str | None:
    """The merge base with ``origin/main``, else ``HEAD~1``, else None (no history: all new)."""
    base = _git(["merge-base", "HEAD", "origin/main"], cwd, check=False)
    if base:
        return base.strip()
    parent = _git(["rev-parse", "--verify", "--quiet", "HEAD~1^{commit}"], cwd, check=False)
    return parent.strip() if parent else None


def check_against_git(
    schema_dir: Path,
    ref: str | None,
    *,
    naming: Naming,
    levels: Levels,
    level: CompatibilityLevel | None = None,
    in_use: Iterable[str] = (),
) -> Report:
    """Compare *schema_dir* with its state at git *ref* (None: nothing, every schema is new)."""
    current = read_schema_dir(schema_dir)
    subjects = naming.subjects(current)
    git = _GitHistory(schema_dir, ref)
    then = git.snapshot(ref) if ref else {}
    results = [
        _verdict(
            avsc,
            subjects[avsc.name],
            level or levels.of(subjects[avsc.name]),
            lambda lv, a=avsc: git.history(a.name, then, lv),
        )
        for avsc in current
    ]
    used = set(in_use)
    for name, old in sorted(then.items()):
        if name not in subjects:
            # An event type that is gone has no topic left: its subject may be unknown.
            subject = naming.subject(name) or "?"
            status: Status = "deleted-in-use" if name in used else "deleted"
            results.append(
                SchemaResult(subject, name, old.path, level or levels.of(subject), status)
            )
    return Report(f"git {ref}" if ref else "nothing (no git history)", tuple(results))


def check_against_registry(
    schema_dir: Path,
    client: SchemaRegistryClient,
    *,
    naming: Naming,
    levels: Levels,
    level: CompatibilityLevel | None = None,
) -> Report:
    """Compare *schema_dir* with every live version of each subject in the registry."""
    current = read_schema_dir(schema_dir)
    subjects = naming.subjects(current)
    registry = _RegistryHistory(client)
    results = [
        _verdict(
            avsc,
            subjects[avsc.name],
            level or levels.of(subjects[avsc.name]),
            lambda _lv, s=subjects[avsc.name]: registry.history(s),
        )
        for avsc in current
    ]
    return Report("the registry's live versions", tuple(results))


def _verdict(
    avsc: Avsc,
    subject: str,
    level: CompatibilityLevel,
    history_of: Callable[[CompatibilityLevel], History],
) -> SchemaResult:
    history = history_of(level)
    base = SchemaResult(subject, avsc.name, avsc.path, level, "new")
    if not history:
        return base
    versions = tuple(version for version, _ in history)
    if history[-1][1].data == avsc.data:
        return _replace(base, status="unchanged", compared_with=versions[-1:])
    existing: list[tuple[int | str, avro.schema.Schema]] = [(v, a.parsed) for v, a in history]
    problems = tuple(incompatibilities(level, avsc.parsed, existing))
    compared = versions if level.transitive else versions[-1:]
    status: Status = "incompatible" if problems else "compatible"
    return _replace(base, status=status, compared_with=compared, problems=problems)


def _replace(result: SchemaResult, **changes: Any) -> SchemaResult:
    return SchemaResult(**{**result.__dict__, **changes})


class _GitHistory:
    """``.avsc`` files at commits, read with ``git show``; one parse per commit."""

    def __init__(self, schema_dir: Path, ref: str | None) -> None:
        # git paths are relative to the working directory (``git show REF:./path``)
        self._dir = Path(os.path.relpath(schema_dir)) if schema_dir.is_absolute() else schema_dir
        self._ref = ref
        self._snapshots: dict[str, dict[str, Avsc]] = {}

    def snapshot(self, commit: str) -> dict[str, Avsc]:
        """The schemas at *commit* by full name."""
        if commit not in self._snapshots:
            listing = _git(["ls-tree", "--name-only", commit, "--", f"{self._dir}/"], None)
            texts = {
                path: _git(["show", f"{commit}:./{path}"], None)
                for path in listing.splitlines()
                if path.endswith(".avsc")
            }
            try:
                loaded = load_schemas(texts)
            except InputError as exc:
                raise InputError(f"at {commit}: {exc}") from None
            self._snapshots[commit] = {avsc.name: avsc for avsc in loaded}
        return self._snapshots[commit]

    def history(self, name: str, then: Mapping[str, Avsc], level: CompatibilityLevel) -> History:
        """The versions of *name* to compare with, oldest first: the one at the ref or,
        for a transitive level, each distinct one in the history behind it."""
        old = then.get(name)
        if old is None or self._ref is None:
            return []
        if not level.transitive:
            return [(self._short(self._ref), old)]
        commits = _git(["log", "--format=%h", self._ref, "--", old.path], None).split()
        history: History = []
        for commit in reversed(commits):
            version = self.snapshot(commit).get(name)
            if version is not None and (not history or history[-1][1].data != version.data):
                history.append((commit, version))
        return history or [(self._short(self._ref), old)]

    def _short(self, ref: str) -> str:
        return _git(["rev-parse", "--short", ref], None).strip()


class _RegistryHistory:
    """Live versions of subjects, with the schemas their references name."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client

    def history(self, subject: str) -> History:
        try:
            versions = self._client.get_versions(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return []
            raise RegistryError(f"registry failed listing {subject}: {exc}") from None
        except Exception as exc:  # transport errors: the client's HTTP library's own types
            raise RegistryError(f"schema registry unreachable: {exc!r}") from exc
        try:
            return [(version, self._load(subject, version)) for version in sorted(versions)]
        except SchemaRegistryError as exc:
            raise RegistryError(f"registry failed reading {subject}: {exc}") from None

    def _load(self, subject: str, version: int) -> Avsc:
        texts: dict[str, str] = {}
        self._collect(subject, version, texts)
        loaded = load_schemas(texts)
        key = f"{subject}/{version}"
        return next(avsc for avsc in loaded if avsc.path == key)

    def _collect(self, subject: str, version: int, texts: dict[str, str]) -> None:
        key = f"{subject}/{version}"
        if key in texts:
            return
        registered = self._client.get_version(subject, version)
        texts[key] = registered.schema.schema_str or ""
        for reference in registered.schema.references or []:
            self._collect(str(reference.subject), int(reference.version or 0), texts)


def _git(args: Sequence[str], cwd: Path | None, *, check: bool = True) -> str:
    """The output of ``git *args*``; with *check*, InputError when git refuses."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InputError("git is not installed") from None
    if done.returncode != 0:
        if not check:
            return ""
        raise InputError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def _level(value: object, where: str) -> CompatibilityLevel:
    level = parse_level(value)
    if level is None:
        names = ", ".join(CompatibilityLevel)
        raise InputError(f"{where}: {value!r} is not a compatibility level ({names})")
    return level
