"""Parsing Braze's rate-limit headers (docs/braze.md#rate-limit-headers): case-insensitive, epoch or delta resets."""

from __future__ import annotations

import pytest

from masivo_braze_sync.braze.headers import RateLimitHeaders, parse_rate_limit_headers

NOW = 1_800_000_000.0


def parse(headers: dict[str, str]) -> RateLimitHeaders:
    return parse_rate_limit_headers(headers, clock=lambda: NOW)


def test_lowercase_and_mixed_case_names():
    expected = RateLimitHeaders(limit=3000, remaining=12, reset_in=2.0, retry_after=None)
    assert parse({"x-ratelimit-limit": "3000", "x-ratelimit-remaining": "12", "x-ratelimit-reset": "2"}) == expected
    assert parse({"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "2"}) == expected


@pytest.mark.parametrize(
    ("value", "reset_in"),
    [
        ("2", 2.0),  # MAU-plan docs: seconds remaining
        ("0.25", 0.25),
        (str(int(NOW) + 3), 3.0),  # general docs: UTC epoch seconds
        (f"{NOW + 1.5:.3f}", 1.5),
        (str(int(NOW) - 10), 0.0),  # an epoch in the past: already reset
        ("-1", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_reset_epoch_or_delta(value: str, reset_in: float | None):
    got = parse({"x-ratelimit-reset": value}).reset_in
    assert got == (pytest.approx(reset_in) if reset_in is not None else None)


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"x-ratelimit-retry-after": "7"}, 7.0),
        ({"X-Ratelimit-Retry-After": "0.5"}, 0.5),
        ({"x-ratelimit-retry-after": "7", "retry-after": "99"}, 7.0),  # Braze's own header wins
        ({"retry-after": "4"}, 4.0),
        ({"retry-after": "Fri, 15 Jan 2027 08:00:05 GMT"}, 5.0),  # HTTP-date form, NOW + 5 s
        ({"x-ratelimit-retry-after": "-3"}, None),
        ({"x-ratelimit-retry-after": "later"}, None),
        ({"x-ratelimit-retry-after": str(int(NOW) + 5)}, 5.0),  # an epoch can only mean "until then"
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], retry_after: float | None):
    got = parse(headers).retry_after
    assert got == (pytest.approx(retry_after) if retry_after is not None else None)


def test_malformed_counts_are_ignored():
    got = parse({"x-ratelimit-remaining": "-5", "x-ratelimit-limit": "many"})
    assert got.remaining is None
    assert got.limit is None
