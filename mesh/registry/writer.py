"""The writer: produces records to ``_schemas`` (acks=all, idempotent) and returns their offsets.

Producing is only half a write: the caller then waits until its own reader has applied
the records (:meth:`mesh.registry.reader.Reader.wait_for`) before answering, so a reply
never runs ahead of the registry's own state.

A record's delivery timeout is half the write's timeout, so when a write gives up its
records have failed for good in the producer instead of waiting there (librdkafka's
default: 5 minutes) to be sent behind later ones. A record already sent can still be
appended by a broker that was stalled; :meth:`mesh.registry.service.Registry` fences such
records off before it writes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mesh.registry.errors import ApiError
from mesh.registry.records import EPOCH_HEADER, KeyValue

__all__ = ["Writer"]

_DELIVERY_TIMEOUTS = ("message.timeout.ms", "delivery.timeout.ms")  # aliases


class Writer:
    def __init__(self, *, kafka: Mapping[str, Any], topic: str, timeout_s: float) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._config = {
            **{k: v for k, v in kafka.items() if k not in _DELIVERY_TIMEOUTS},
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "message.timeout.ms": max(1, round(timeout_s * 500)),
        }
        self._producer = Producer(self._config)
        self._lock = asyncio.Lock()

    async def produce(self, batch: Sequence[KeyValue], *, epoch: int | None) -> list[int]:
        """Produce *batch* in order, tagged with *epoch*; return the offsets once acknowledged.

        After a failure the producer is replaced: an idempotent producer whose records timed
        out can be left fenced or out of sequence, and must not fail every later write.
        """
        async with self._lock:
            try:
                return await self._produce(batch, epoch=epoch)
            except ApiError:
                self._producer.purge()
                self._producer.flush(0)
                self._producer = Producer(self._config)
                raise

    async def _produce(self, batch: Sequence[KeyValue], *, epoch: int | None) -> list[int]:
        headers = None if epoch is None else [(EPOCH_HEADER, str(epoch).encode())]
        reports: list[tuple[KafkaError | None, Message]] = []
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
