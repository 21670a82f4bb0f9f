"""Log lines of a mesh process: JSON for machines, readable text for people.

Each line an agent writes while handling an event carries the event's ids (agent,
event id, correlation id, causation id), whether it comes through ``ctx.log`` (the ids
are bound on the adapter) or through any logger on the handling task (the ids are in a
context variable the :class:`~mesh.runtime.context.Context` sets), so mesh's own
per-event lines have them too. Lines of sync handlers, which run in a thread pool, carry
them through ``ctx.log`` only.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from mesh.errors import InputError

__all__ = ["EVENT_FIELDS", "bind_event", "configure_logging"]

#: Record attributes that identify the event being handled, in the order they print.
EVENT_FIELDS = ("agent", "event_id", "correlation_id", "causation_id")

_event: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "mesh_event", default=None
)


def bind_event(fields: dict[str, str | None]) -> None:
    """Bind *fields* (see :data:`EVENT_FIELDS`) to every line logged from this task on."""
    _event.set(fields)


class _EventFilter(logging.Filter):
    """Copies the bound event fields onto records that do not carry their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _event.get()
        if fields is not None and not hasattr(record, "event_id"):
            record.__dict__.update(fields)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message  agent=... event_id=...`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        bound = [
            f"{name}={value}"
            for name in EVENT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        if not bound:
            return text
        head, sep, rest = text.partition("\n")  # a traceback stays below the ids
        return f"{head}  {' '.join(bound)}{sep}{rest}"


def configure_logging(level: str | int = "INFO", *, stream: TextIO | None = None) -> None:
    """Log to *stream* (stderr): JSON lines unless it is a terminal. Replaces root handlers."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if stream.isatty() else JsonFormatter())
    handler.addFilter(_EventFilter())
    root = logging.getLogger()
    try:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        raise InputError(f"unknown log level {level!r}: use DEBUG, INFO or WARNING") from None
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
