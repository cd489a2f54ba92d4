"""The full sync writes consumer objects a kind after the other, a few at once within a kind."""

from __future__ import annotations

import threading
import time

import pytest

from activities.sync import WRITE_CONCURRENCY, _in_rank_order


def test_a_rank_starts_only_after_the_one_before_finished_and_concurrency_is_bounded() -> None:
    items = [(rank, n) for rank in range(3) for n in range(20)]
    lock = threading.Lock()
    running: list[int] = []
    finished: list[tuple[int, int]] = []
    peak = 0

    def write(item: tuple[int, int]) -> None:
        nonlocal peak
        with lock:
            # every item of the ranks before is finished before this one starts
            assert sum(1 for r, _ in finished if r < item[0]) == 20 * item[0]
            running.append(item[0])
            peak = max(peak, len(running))
        time.sleep(0.005)
        with lock:
            running.remove(item[0])
            finished.append(item)

    _in_rank_order(items, lambda item: item[0], write, str)
    assert sorted(finished) == items
    assert 1 < peak <= WRITE_CONCURRENCY


def test_the_first_failure_is_raised_and_later_ranks_are_not_written() -> None:
    items = [(0, n) for n in range(10)] + [(1, n) for n in range(10)]
    written: list[tuple[int, int]] = []

    def write(item: tuple[int, int]) -> None:
        if item == (0, 3):
            raise RuntimeError("applying Application/x: 422 invalid")
        written.append(item)

    with pytest.raises(RuntimeError, match="422 invalid"):
        _in_rank_order(items, lambda item: item[0], write, str)
    assert not [item for item in written if item[0] == 1]
