import random

from mesh.runtime.offsets import PartitionOffsets


def test_commit_point_is_the_first_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        offsets.add(offset)
    assert offsets.committable is None
    assert offsets.complete(12) is False
    assert offsets.committable is None
    assert offsets.unfinished == 3
    assert offsets.complete(10) is True
    assert offsets.committable == 11
    assert offsets.complete(11) is True
    assert offsets.committable == 13  # 12 was already finished
    assert offsets.unfinished == 1
    assert offsets.complete(13) is True
    assert offsets.committable == 14
    assert offsets.unfinished == 0


def test_gaps_in_offsets_do_not_block() -> None:
    offsets = PartitionOffsets()
    for offset in (3, 7, 20):  # compaction or transaction markers leave gaps
        offsets.add(offset)
    offsets.complete(7)
    offsets.complete(3)
    assert offsets.committable == 20
    offsets.complete(20)
    assert offsets.committable == 21


def test_random_completion_order_never_passes_an_unfinished_offset() -> None:
    rng = random.Random(7)
    received = list(range(1000))
    offsets = PartitionOffsets()
    for offset in received:
        offsets.add(offset)
    order = received[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for offset in order:
        offsets.complete(offset)
        finished.add(offset)
        assert offsets.unfinished == 1000 - len(finished)
        if offsets.committable is not None:
            assert all(o in finished for o in range(offsets.committable))
            assert offsets.committable == len(finished) or offsets.committable not in finished
    assert offsets.committable == 1000
