import time

import pytest

from mesh import Dedupe


def test_once_runs_the_block_the_first_time_only() -> None:
    dedupe = Dedupe()
    runs = []
    for _ in range(3):
        with dedupe.once("e1") as first:
            if first:
                runs.append("e1")
    assert runs == ["e1"]
    assert dedupe.done("e1")
    assert not dedupe.done("e2")


def test_a_failed_block_is_not_marked_so_the_retry_runs_it() -> None:
    dedupe = Dedupe()

    def fail_once() -> None:
        with dedupe.once("e1") as first:
            assert first
            raise RuntimeError("side effect failed")

    with pytest.raises(RuntimeError, match="side effect failed"):
        fail_once()
    assert not dedupe.done("e1")
    with dedupe.once("e1") as first:
        assert first


def test_the_window_keeps_the_newest_ids() -> None:
    dedupe = Dedupe(max_ids=3)
    for n in range(5):
        dedupe.mark(f"e{n}")
    assert len(dedupe) == 3
    assert [dedupe.done(f"e{n}") for n in range(5)] == [False, False, True, True, True]
    dedupe.mark("e2")  # marking again makes it the newest
    dedupe.mark("e5")
    assert dedupe.done("e2")
    assert not dedupe.done("e3")


def test_ids_expire_after_the_ttl() -> None:
    dedupe = Dedupe(ttl_s=0.05)
    dedupe.mark("old")
    time.sleep(0.08)
    assert not dedupe.done("old")
    dedupe.mark("new")
    assert len(dedupe) == 1


@pytest.mark.parametrize("kwargs", [{"max_ids": 0}, {"ttl_s": 0}, {"ttl_s": -1}])
def test_bad_windows_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        Dedupe(**kwargs)
