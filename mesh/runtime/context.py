"""What a handler knows about the event it handles, and how it emits more."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from mesh.logs import bind_event
from mesh.runtime.delay import Delayed, due_in_ms

if TYPE_CHECKING:
    from mesh.envelope import Envelope
    from mesh.event import Event

__all__ = ["Context", "EmitAfterFinishError"]


class EmitAfterFinishError(RuntimeError):
    """``ctx.emit`` was called after the handler returned, failed or timed out."""


class Context:
    """Handed to every handler next to its event.

    Emits are buffered and published only when the handler returns successfully, so a
    handler that raises or times out never leaves half of its outputs downstream.
    """

    __slots__ = (
        "_emits",
        "_headers",
        "_log",
        "_span_id",
        "agent",
        "attempt",
        "envelope",
        "key",
        "offset",
        "partition",
        "raw_headers",
        "topic",
    )

    def __init__(
        self,
        *,
        agent: str,
        envelope: Envelope,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        raw_headers: list[tuple[str, bytes]] | None,
        attempt: int = 1,
    ) -> None:
        self.agent = agent
        #: 1 on the first try, 2 on the first retry, ...
        self.attempt = attempt
        self.envelope = envelope
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.raw_headers = raw_headers or []
        self._emits: list[Event | Delayed] | None = []
        self._headers: dict[str, bytes] | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self._span_id: str | None = None  # of the handler's trace span: its outputs' parent

    def _bind_logs(self) -> None:
        """Tag every line the calling task logs from now on (mesh's own too) with the ids.

        Called by the runner on the task that handles the event: a context variable set
        outside a task would stick to every later line of the thread.
        """
        bind_event(self._log_fields())

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlation_id

    @property
    def causation_id(self) -> str | None:
        return self.envelope.causation_id

    @property
    def headers(self) -> Mapping[str, bytes]:
        """Kafka headers of the input record (the last value of a repeated key wins)."""
        if self._headers is None:
            self._headers = dict(self.raw_headers)
        return self._headers

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger with agent, event id, correlation id and causation id bound."""
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"mesh.agent.{self.agent}"), self._log_fields()
            )
        return self._log

    def _log_fields(self) -> dict[str, str | None]:
        envelope = self.envelope
        return {
            "agent": self.agent,
            "event_id": envelope.event_id,
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
        }

    def emit(self, event: Event, *, delay: str | float | timedelta | None = None) -> None:
        """Publish *event* as a consequence of the one being handled, once the handler succeeds.

        With *delay* (``"30s"``, seconds or a timedelta, counted from now) it goes through
        a delay topic and reaches its topic no earlier than that.
        """
        if self._emits is None:
            raise EmitAfterFinishError(
                f"agent {self.agent!r} emitted {type(event).__name__} after its handler finished"
            )
        self._emits.append(event if delay is None else Delayed(event, due_in_ms(delay)))

    def _finish(self) -> list[Event | Delayed]:
        """Close the context and hand over what was emitted; later emits raise."""
        emits, self._emits = self._emits or [], None
        return emits
