"""Which offset of a partition may be committed while many of its events are in flight.

Events of one partition finish out of order (different keys run concurrently), but the
committed offset must never pass an unfinished event: after a crash, everything from
the committed offset on is delivered again, so committing past an unfinished event
would lose it. We therefore commit only the contiguous prefix of finished offsets.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition in the order received, and which of them are finished.

    Offsets need not be consecutive (compaction and transaction markers leave gaps), so
    the order of arrival, not arithmetic, defines the prefix.
    """

    __slots__ = ("_done", "_pending", "committable")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        #: The next offset to commit (Kafka commits "the next offset to read"), or None.
        self.committable: int | None = None

    @property
    def window(self) -> int:
        """Events received since the committable offset, finished or not."""
        return len(self._pending)

    @property
    def unfinished(self) -> int:
        """Events received and not finished yet."""
        return len(self._pending) - len(self._done)

    def add(self, offset: int) -> None:
        self._pending.append(offset)

    def complete(self, offset: int) -> bool:
        """Mark *offset* finished; return True when the committable offset moved."""
        pending = self._pending
        if pending and pending[0] == offset:
            last = pending.popleft()
            done = self._done
            while pending and pending[0] in done:
                last = pending.popleft()
                done.discard(last)
            self.committable = pending[0] if pending else last + 1
            return True
        self._done.add(offset)
        return False
