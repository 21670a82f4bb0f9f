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
import math
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from mesh.errors import InputError

__all__ = ["EVENT_FIELDS", "RepeatFilter", "bind_event", "configure_logging"]

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


class RepeatFilter(logging.Filter):
    """Passes the first of a run of like warnings and errors, then one per *interval_s*
    saying how many like it were dropped meanwhile.

    A Kafka client that cannot reach its broker reports every reconnect attempt, about 20
    lines a second per client and one client per agent: the first line says what is
    wrong, the periodic count that it still is. Lines are alike when they differ only in
    the client's name and in numbers (ports, milliseconds). Lines below WARNING (a
    ``debug`` context someone turned on) all pass.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        #: shape -> (when its last line passed, monotonic s; lines dropped since)
        self._runs: dict[tuple[int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        shape = (record.levelno, _shape(record.getMessage()))
        now = time.monotonic()
        with self._lock:
            since, dropped = self._runs.get(shape, (-math.inf, 0))
            if now - since < self.interval_s:
                self._runs[shape] = (since, dropped + 1)
                return False
            self._runs[shape] = (now, 0)
        if dropped:
            record.msg = (
                f"{record.getMessage()} ({dropped} more like it in the last {now - since:.0f} s)"
            )
            record.args = ()
        return True


#: Loggers of the HTTP libraries (the registry client's is httpx2) that log every request.
_CHATTY = ("httpx", "httpx2", "httpcore", "httpcore2")

_CLIENT_NAME = re.compile(r"[^\s\[\]]*#(?:consumer|producer)-\d+")
_NUMBER = re.compile(r"\d+")


def _shape(message: str) -> str:
    return _NUMBER.sub("N", _CLIENT_NAME.sub("", message))


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
    # The registry client's HTTP library logs every request at INFO: noise beside the
    # decisions an operator reads (retries, dead letters, assignments), kept for DEBUG.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.NOTSET
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)
