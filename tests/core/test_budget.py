"""The shape of the cross-process budget: never more than the limit, close to it at Braze's size."""

from __future__ import annotations

import pytest

from masivo_braze_sync.budget import budget_shape


@pytest.mark.parametrize(("limit", "window"), [(3000, 3.0), (100, 3.0), (20_000, 60.0), (10, 1.0)])
def test_a_block_taken_at_once_and_spent_at_the_paced_rate_stays_under_the_limit(limit, window) -> None:
    slots, decay = budget_shape(limit, window)
    assert 1 <= slots <= max(1, limit // 10)
    spend = slots * window / limit  # seconds to spend one block at the workspace's own rate
    assert 2 * slots + decay * (window + spend) <= limit + 1e-9


def test_braze_default_keeps_over_90_percent_of_the_limit() -> None:
    _, decay = budget_shape(3000, 3.0)
    assert decay >= 0.9 * 1000
