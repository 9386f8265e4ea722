"""Arithmetic the tests check batching against."""

from __future__ import annotations

from masivo_braze_sync.braze.limits import BRAZE


def min_requests(objects: int, per_request: int = BRAZE.objects_per_array) -> int:
    """The fewest requests that can carry `objects` objects."""
    return -(-objects // per_request)
