"""``Event``: the base class of typed events, a pydantic model bound to an Avro record and a topic.

The pydantic model is the source of truth; ``mesh schema gen`` writes its ``.avsc`` into
``schemas/`` and the runtime checks at start-up that the two agree::

    class TaskCreated(Event, name="acme.tasks.TaskCreated", topic="tasks.created", key="task_id"):
        \"\"\"A user asked for a task.\"\"\"

        task_id: str
        prompt: str
        \"\"\"What to do, in the user's words.\"\"\"   # -> Avro "doc"
        created_at: datetime                       # -> timestamp-millis

Class keywords, all optional:

- ``name``: the Avro name, default the class name; as in Avro, a dotted name is a full name
  ``namespace.Name``. The namespace is never derived from the Python module, so moving a
  class does not rename its schema. (A ``namespace=`` keyword cannot exist: the metaclass
  takes the class body under that name.) The event type, carried in the
  ``mesh.event-type`` header, is the full name.
- ``topic``: default the name in kebab case: ``TaskCreated`` -> ``task-created``.
- ``key``: a ``str``, ``int`` or ``UUID`` field whose value is the Kafka key (and thus the
  ordering key); default none, and the runtime keys by event id.

Events are immutable (``frozen``) and refuse unknown fields. Datetimes travel as
``timestamp-millis``: sub-millisecond digits are dropped, decoded values are aware UTC,
and encoding refuses naive values (fastavro would silently take them as local time).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict, PydanticUndefinedAnnotation, PydanticUserError

from mesh.avro import AvroModel, avro_name, class_doc, model_schema
from mesh.errors import SchemaError

__all__ = ["Event", "topic_name"]

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_KEY_TYPES = (str, int, UUID)


def topic_name(event_name: str) -> str:
    """The conventional topic of an event name: ``HTTPRequestSent`` -> ``http-request-sent``."""
    return _WORD_BOUNDARY.sub("-", event_name).replace("_", "-").lower()


class _Declaration(NamedTuple):
    name: str
    namespace: str | None
    doc: str | None
    topic: str
    key: str | None


class Event(BaseModel):
    """Base class of every event type; see the module docstring for the declaration keywords."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    __mesh_declaration__: ClassVar[_Declaration]

    def __init_subclass__(
        cls,
        *,
        topic: str | None = None,
        key: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        where = f"event {cls.__qualname__}"
        namespace, _, name = (name or cls.__name__).rpartition(".")
        for part in [*namespace.split("."), name] if namespace else [name]:
            avro_name(part, what=f"{where}: name")
        topic = topic or topic_name(name)
        if not _TOPIC.match(topic) or topic in (".", ".."):
            raise SchemaError(f"{where}: {topic!r} is not a valid Kafka topic name")
        cls.__mesh_declaration__ = _Declaration(name, namespace or None, class_doc(cls), topic, key)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__pydantic_complete__:  # else (forward references) on first use
            cls.avro_model()

    @classmethod
    def event_type(cls) -> str:
        """The full Avro name ``namespace.Name``, carried in the ``mesh.event-type`` header."""
        declared = cls._declared()
        return f"{declared.namespace}.{declared.name}" if declared.namespace else declared.name

    @classmethod
    def topic(cls) -> str:
        """The topic events of this type are published to."""
        return cls._declared().topic

    @classmethod
    def key_of(cls, event: Event) -> bytes | None:
        """The Kafka key of *event*: its key field as UTF-8, None when the type declares none."""
        key = cls.__mesh_declaration__.key
        if key is None:
            return None
        value = getattr(event, key)
        return value.encode() if type(value) is str else str(value).encode()

    @classmethod
    def avro_schema(cls) -> dict[str, Any]:
        """The Avro record schema (shared and cached: do not modify it)."""
        return cls.avro_model().schema

    @classmethod
    def avro_model(cls) -> AvroModel:
        """The schema with the traits the serde relies on, built once per class."""
        avro: AvroModel | None = cls.__dict__.get("__mesh_avro__")
        if avro is None:
            avro = cls._build_avro_model()
            type.__setattr__(cls, "__mesh_avro__", avro)
        return avro

    @classmethod
    def _declared(cls) -> _Declaration:
        if cls is Event:
            raise TypeError("Event is the base class; declare an event type by subclassing it")
        return cls.__mesh_declaration__

    @classmethod
    def _build_avro_model(cls) -> AvroModel:
        declared = cls._declared()
        if not cls.__pydantic_complete__:
            try:
                cls.model_rebuild()
            except (PydanticUndefinedAnnotation, PydanticUserError) as exc:
                raise SchemaError(f"event {cls.__qualname__}: {exc.message}") from None
        if declared.key is not None:
            field = cls.model_fields.get(declared.key)
            if field is None or field.annotation not in _KEY_TYPES:
                raise SchemaError(
                    f"event {cls.__qualname__}: key={declared.key!r} must name a field of "
                    "type str, int or UUID"
                )
        return model_schema(cls, name=declared.name, namespace=declared.namespace, doc=declared.doc)
