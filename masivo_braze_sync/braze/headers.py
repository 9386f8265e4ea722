"""Reading Braze's rate-limit headers (docs/braze.md#rate-limit-headers).

Braze sends `X-RateLimit-Limit`, `-Remaining` and `-Reset` on ordinary responses and
`X-Ratelimit-Retry-After` on a 429, in lower case (HTTP/2 style); `httpx.Headers`
looks names up case-insensitively. The docs disagree on `-Reset`: UTC epoch seconds in the
general pages, seconds remaining in the MAU-plan section, so values above 10⁹ are read as an
epoch and smaller ones as a delta. The standard `Retry-After` header is not documented by Braze;
it is honoured as a fallback because proxies and load balancers in front of Braze send it.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

__all__ = ["EPOCH_THRESHOLD", "RateLimitHeaders", "parse_rate_limit_headers"]

#: `X-RateLimit-Reset` values above this are epoch seconds, others a delta (docs/braze.md#rate-limit-headers).
EPOCH_THRESHOLD = 1e9


@dataclass(frozen=True)
class RateLimitHeaders:
    """What a response said about the workspace's budget; None where it said nothing usable."""

    limit: int | None = None
    remaining: int | None = None
    #: seconds from the response until the window resets
    reset_in: float | None = None
    #: seconds Braze asked us to wait before retrying
    retry_after: float | None = None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _count(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None or number < 0 else int(number)


def _reset_in(value: str | None, now: float) -> float | None:
    number = _number(value)
    if number is None or number < 0:
        return None
    delay = number - now if number > EPOCH_THRESHOLD else number
    # An epoch already in the past means the window has reset; nothing to wait for.
    return max(delay, 0.0)


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is not None:
        if number < 0:
            return None
        # Braze documents integer seconds; an epoch-sized value can only mean "until then".
        return max(number - now, 0.0) if number > EPOCH_THRESHOLD else number
    try:  # the HTTP-date form of Retry-After (RFC 9110 §10.2.3)
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)


def parse_rate_limit_headers(
    headers: Mapping[str, str] | httpx.Headers, *, clock: Callable[[], float] = time.time
) -> RateLimitHeaders:
    """Parse the rate-limit headers of one response.

    Args:
        headers: the response headers (looked up case-insensitively).
        clock: wall-clock seconds since the epoch, used for epoch-style resets and HTTP dates.

    Returns:
        The parsed values; malformed, negative or non-finite values become None.
    """
    if not isinstance(headers, httpx.Headers):
        headers = httpx.Headers(headers)
    now = clock()
    retry_after = _retry_after(headers.get("x-ratelimit-retry-after"), now)
    if retry_after is None:
        retry_after = _retry_after(headers.get("retry-after"), now)
    return RateLimitHeaders(
        limit=_count(headers.get("x-ratelimit-limit")),
        remaining=_count(headers.get("x-ratelimit-remaining")),
        reset_in=_reset_in(headers.get("x-ratelimit-reset"), now),
        retry_after=retry_after,
    )
