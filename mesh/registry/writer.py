"""The writer: produces records to ``_schemas`` (acks=all, idempotent) and returns their offsets.

Producing is only half a write: the caller then waits until its own reader has applied
the records (:meth:`mesh.registry.reader.Reader.wait_for`) before answering, so a reply
never runs ahead of the registry's own state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mesh.registry.errors import ApiError
from mesh.registry.records import EPOCH_HEADER, KeyValue

__all__ = ["Writer"]


class Writer:
    def __init__(self, *, kafka: Mapping[str, Any], topic: str, timeout_s: float) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._producer = Producer(
            {**kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 0}
        )
        self._lock = asyncio.Lock()

    async def produce(self, batch: Sequence[KeyValue], *, epoch: int | None) -> list[int]:
        """Produce *batch* in order, tagged with *epoch*; return the offsets once acknowledged."""
        headers = None if epoch is None else [(EPOCH_HEADER, str(epoch).encode())]
        reports: list[tuple[KafkaError | None, Message]] = []
        async with self._lock:
            try:
                for key, value in batch:
                    self._producer.produce(
                        self._topic,
                        key=key,
                        value=value,
                        headers=headers,
                        on_delivery=lambda err, msg: reports.append((err, msg)),
                    )
            except (BufferError, KafkaException) as exc:
                raise ApiError.store_failed(f"cannot produce to {self._topic}: {exc}") from None
            remaining = await asyncio.to_thread(self._producer.flush, self._timeout_s)
        if remaining:
            raise ApiError.timed_out(f"{self._topic} did not acknowledge a write")
        for error, _ in reports:
            if error is not None:
                raise ApiError.store_failed(f"cannot write to {self._topic}: {error.str()}")
        offsets = [message.offset() for _, message in reports]
        if len(offsets) != len(batch) or any(offset is None for offset in offsets):
            raise ApiError.store_failed(f"{self._topic} acknowledged a write without its offset")
        return [int(offset) for offset in offsets]

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
