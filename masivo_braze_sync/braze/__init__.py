"""Delivery to Braze: the REST client, the endpoint allow-list and the per-workspace pacer.

endpoints   validate_rest_endpoint: an API key only ever goes to a Braze REST host
ratelimit   RateLimiter (GCRA pacer that follows Braze's headers), LimiterRegistry and the process-wide `limiters`
headers     parse_rate_limit_headers: X-RateLimit-* and retry-after (docs/braze.md#rate-limit-headers)
client      BrazeClient: /users/track and /users/delete with pacing, retries, classification
"""

from __future__ import annotations

from masivo_braze_sync.braze.client import (
    BrazeClient,
    BrazeSettings,
    DeleteResult,
    Outcome,
    TrackResult,
    classify_status,
)
from masivo_braze_sync.braze.endpoints import BRAZE_REST_HOSTS, LOCAL_HOSTS, validate_rest_endpoint
from masivo_braze_sync.braze.headers import RateLimitHeaders, parse_rate_limit_headers
from masivo_braze_sync.braze.ratelimit import (
    DELETE_BUCKET,
    TRACK_BUCKET,
    LimiterRegistry,
    RateLimiter,
    limiters,
    workspace_key,
)

__all__ = [
    "BRAZE_REST_HOSTS",
    "DELETE_BUCKET",
    "LOCAL_HOSTS",
    "TRACK_BUCKET",
    "BrazeClient",
    "BrazeSettings",
    "DeleteResult",
    "LimiterRegistry",
    "Outcome",
    "RateLimitHeaders",
    "RateLimiter",
    "TrackResult",
    "classify_status",
    "limiters",
    "parse_rate_limit_headers",
    "validate_rest_endpoint",
    "workspace_key",
]
