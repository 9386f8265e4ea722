"""The pending set keeps a wake-up that arrives while its consumer is being looked at: the change
may have committed after the look's read (docs/live.md#wake-ups)."""

from __future__ import annotations

import time

from masivo_braze_sync.live.pending import Pending


def test_a_wake_up_during_a_look_that_found_nothing_is_kept() -> None:
    p = Pending(0.02, 1.0)
    p.wake("events")
    p.looking("events")
    p.wake("events")  # committed after the look's read
    p.done("events")
    assert "events" in p
    assert p.due() == {"events"}


def test_a_look_without_a_wake_up_during_it_leaves_nothing_pending() -> None:
    p = Pending(0.02, 1.0)
    p.wake("events")
    p.looking("events")
    p.done("events")
    assert "events" not in p


def test_a_wake_up_during_a_held_look_is_not_pushed_back_by_the_retry_delay() -> None:
    p = Pending(0.02, 1.0)
    for _ in range(10):  # the horizon stayed held: the retry delay has grown to its maximum
        p.looking("events")
        p.held("events")
    p.looking("events")
    p.wake("events", 0.03)
    p.held("events")
    assert p.next_due() <= time.monotonic() + 0.03
