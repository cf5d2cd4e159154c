"""bench/lanes.py's envelope check: what it calls an overshoot."""

from __future__ import annotations

from bench.lanes import overshoot

T = 10_000  # µs


def test_slots_a_gcra_bucket_would_book_do_not_overshoot() -> None:
    slots = [0, 0, 0, T, 2 * T, 3 * T, 10 * T, 10 * T, 10 * T, 11 * T]  # burst 3
    assert overshoot(slots, T, burst=3) == 0


def test_one_send_too_many_in_a_window_is_an_overshoot_of_one() -> None:
    assert overshoot([0, 0, 0, 0], T, burst=3) == 1
    assert overshoot([0, 0, 0, T // 2, T], T, burst=3) == 1
    assert overshoot([0, 0, 0, 0, 0, 0], T, burst=3) == 3
