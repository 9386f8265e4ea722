"""The Braze REST client through `httpx.MockTransport`: classification, retries, waits, secrecy."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from masivo_braze_sync.braze import BrazeClient, BrazeSettings, RateLimiter, classify_status
from masivo_braze_sync.braze.client import Outcome
from masivo_braze_sync.errors import (
    AuthenticationError,
    ConfigurationError,
    EndpointNotAllowed,
    PermanentError,
    RateLimited,
    RetryableError,
    SyncError,
)

BASE = "https://rest.iad-01.braze.com"
KEY = "k3y-5ecr3t-0000-1111-abcdef"
BODY = b'{"attributes":[{"external_id":"cust-PII-42","email":"jane@example.com"}]}'
FAST = BrazeSettings(backoff_base_seconds=0.001, backoff_max_seconds=0.005, max_retries=3, timeout_seconds=2)

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler that plays a fixed list of answers and records the requests."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]  # the last one repeats
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(request)
        return step

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def fast_limiter() -> RateLimiter:
    return RateLimiter(1_000_000, 1.0)


def client_for(script: Script, settings: BrazeSettings = FAST, **kwargs: Any) -> BrazeClient:
    kwargs.setdefault("track_limiter", fast_limiter())
    kwargs.setdefault("delete_limiter", fast_limiter())
    return BrazeClient(BASE, KEY, settings=settings, transport=script.transport, **kwargs)


def track(script: Script, body: bytes = BODY, **kwargs: Any):
    async def go():
        async with client_for(script, **kwargs) as client:
            return await client.track(body)

    return asyncio.run(go())


def json(status: int, body: Any = None, **headers: str) -> httpx.Response:
    content = orjson.dumps(body if body is not None else {"message": "success"})
    return httpx.Response(status, content=content, headers={k.replace("_", "-"): v for k, v in headers.items()})


def net_error(cls: type[httpx.TransportError]) -> httpx.TransportError:
    return cls("simulated", request=httpx.Request("POST", f"{BASE}/users/track"))


OBJECT_ERRORS = [
    {"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "events", "index": 1}
]


# ---- classification table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([json(201, {"message": "success", "attributes_processed": 1})], {"status_code": 201, "attempts": 1}),
        (
            [json(201, {"message": "success", "errors": OBJECT_ERRORS})],
            {"status_code": 201, "errors": OBJECT_ERRORS},
        ),
        ([json(202, {"message": "queued"})], {"status_code": 202, "errors": []}),
        ([httpx.Response(201, content=b"not json")], {"status_code": 201, "errors": []}),
        (
            [json(429, x_ratelimit_retry_after="0"), json(201)],
            {"attempts": 2, "retries": 1, "rate_limited": 1, "possibly_duplicated": False},
        ),
        (
            [json(500), json(201)],
            {"attempts": 2, "retries": 1, "rate_limited": 0, "possibly_duplicated": True},
        ),
        ([json(502), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([json(503), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([json(504), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([net_error(httpx.ReadTimeout), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([net_error(httpx.WriteTimeout), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([net_error(httpx.RemoteProtocolError), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([net_error(httpx.ReadError), json(201)], {"retries": 1, "possibly_duplicated": True}),
        ([net_error(httpx.ConnectError), json(201)], {"retries": 1, "possibly_duplicated": False}),
        ([net_error(httpx.ConnectTimeout), json(201)], {"retries": 1, "possibly_duplicated": False}),
        ([net_error(httpx.PoolTimeout), json(201)], {"retries": 1, "possibly_duplicated": False}),
        (
            [json(429, x_ratelimit_retry_after="0"), json(503), json(201)],
            {"attempts": 3, "rate_limited": 1, "possibly_duplicated": True},
        ),
    ],
)
def test_successes_and_retried_successes(steps: list[Step], expected: dict[str, Any]):
    result = track(Script(*steps))
    for name, value in expected.items():
        assert getattr(result, name) == value, name
    if "status_code" not in expected:
        assert result.status_code == 201


@pytest.mark.parametrize(
    ("steps", "error", "status", "attempts"),
    [
        ([json(400, {"message": "Bad Request"})], PermanentError, 400, 1),
        ([json(401, {"message": "Invalid API key: k3y-5ecr3t"})], AuthenticationError, 401, 1),
        ([json(403, {"message": "Access Denied"})], AuthenticationError, 403, 1),
        ([json(404, {"message": "Not Found"})], PermanentError, 404, 1),
        ([json(413)], PermanentError, 413, 1),
        ([json(422)], PermanentError, 422, 1),
        ([json(408)], PermanentError, 408, 1),  # other 4xx: never retried
        (
            [httpx.Response(307, headers={"location": "https://evil.example/users/track"})],
            PermanentError,
            307,
            1,
        ),
        ([json(503)], RetryableError, 503, 4),
        ([json(500), json(502), json(503), json(504)], RetryableError, 504, 4),
        ([json(429, x_ratelimit_retry_after="0")], RateLimited, 429, 4),
        ([net_error(httpx.ReadTimeout)], RetryableError, None, 4),
        ([net_error(httpx.ConnectError)], RetryableError, None, 4),
        ([json(503), json(400)], PermanentError, 400, 2),
    ],
)
def test_failures(steps: list[Step], error: type[SyncError], status: int | None, attempts: int):
    script = Script(*steps)
    with pytest.raises(error) as info:
        track(script)
    exc = info.value
    assert type(exc) is error
    assert exc.status_code == status
    assert exc.attempts == attempts
    assert len(script.requests) == attempts
    for text in (str(exc), repr(exc)):
        assert KEY not in text
        assert "k3y-5ecr3t" not in text
        assert "cust-PII-42" not in text
        assert "jane@example.com" not in text


def test_400_carries_braze_object_errors_and_generic_message():
    body = {
        "message": "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
        "errors": OBJECT_ERRORS,
    }
    with pytest.raises(PermanentError) as info:
        track(Script(json(400, body)))
    assert info.value.errors == OBJECT_ERRORS
    assert "Valid data must be provided" in str(info.value)
    assert "HTTP 400" in str(info.value)
    assert "/users/track" in str(info.value)
    assert "1 object error" in str(info.value)


@pytest.mark.parametrize(
    "message",
    [
        "Invalid email jane@example.com",
        "external_id cust-PII-42 is blocklisted",
        'Unexpected token in {"attributes": [...]}',
        "Phone +1 555 0100 is not valid",
        "x" * 200,
    ],
)
def test_message_that_may_echo_data_is_left_out(message: str):
    with pytest.raises(PermanentError) as info:
        track(Script(json(400, {"message": message})))
    assert str(info.value) == "Braze rejected /users/track with HTTP 400"


def test_retries_exhausted_says_what_happened():
    with pytest.raises(RetryableError) as info:
        track(Script(json(503)))
    assert str(info.value) == "Braze /users/track still failing after 4 attempts (last: HTTP 503)"
    assert info.value.possibly_applied is True
    with pytest.raises(RetryableError) as info:
        track(Script(net_error(httpx.ConnectError)))
    assert str(info.value) == "Braze /users/track still failing after 4 attempts (last: ConnectError)"
    assert info.value.possibly_applied is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_raised_errors_survive_pickling_with_their_annotations():
    with pytest.raises(RateLimited) as info:
        track(Script(json(429, x_ratelimit_retry_after="0")))
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.status_code == 429
    assert copy.attempts == 4
    assert copy.possibly_applied is False
    assert str(copy) == str(info.value)


def test_auth_messages():
    with pytest.raises(AuthenticationError) as info:
        track(Script(json(401)))
    assert str(info.value) == (
        "Braze refused the API key for this workspace (401): check the key and that the REST endpoint "
        "is the workspace's instance"
    )
    with pytest.raises(AuthenticationError, match=r"\(403\): the key lacks the users\.track permission"):
        track(Script(json(403)))


def test_classify_status():
    assert classify_status(201) is Outcome.SUCCESS
    assert classify_status(202) is Outcome.SUCCESS
    assert classify_status(429) is Outcome.RETRY
    assert classify_status(500) is Outcome.RETRY
    assert classify_status(599) is Outcome.RETRY
    assert classify_status(401) is Outcome.AUTH
    assert classify_status(403) is Outcome.AUTH
    assert classify_status(301) is Outcome.REDIRECT
    assert classify_status(400) is Outcome.PERMANENT
    assert classify_status(413) is Outcome.PERMANENT


# ---- the request itself -------------------------------------------------------------------------


def test_request_shape_and_headers():
    script = Script(json(201))
    track(script)
    (request,) = script.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/users/track"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.content == BODY


def test_api_key_whitespace_is_trimmed():
    script = Script(json(201))

    async def go():
        async with BrazeClient(BASE, f"  {KEY}\n", transport=script.transport, track_limiter=fast_limiter()) as c:
            await c.track(BODY)

    asyncio.run(go())
    assert script.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("key", ["", "   ", f'"{KEY}"', f"'{KEY}'", "abc def", "abc\r\nX-Evil: 1", "clé"])
def test_bad_api_keys_are_refused_without_echo(key: str):
    with pytest.raises(ConfigurationError) as info:
        BrazeClient(BASE, key)
    assert KEY not in str(info.value)
    assert "abc" not in str(info.value)


def test_redirects_are_not_followed_and_the_other_host_never_sees_the_key():
    seen_hosts = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_hosts.append(request.url.host)
        if request.url.host == "evil.example":
            return json(201)
        return httpx.Response(307, headers={"location": "https://evil.example/users/track"})

    async def go():
        async with BrazeClient(
            BASE, KEY, settings=FAST, transport=httpx.MockTransport(handler), track_limiter=fast_limiter()
        ) as client:
            await client.track(BODY)

    with pytest.raises(PermanentError, match="redirects are never followed") as info:
        asyncio.run(go())
    assert info.value.status_code == 307
    assert seen_hosts == ["rest.iad-01.braze.com"]


def test_endpoint_is_checked_before_anything_holds_the_key():
    script = Script(json(201))
    with pytest.raises(EndpointNotAllowed) as info:
        BrazeClient("https://rest.iad-01.braze.com.evil.example", KEY, transport=script.transport)
    assert KEY not in str(info.value)
    assert script.requests == []
    with pytest.raises(EndpointNotAllowed):
        BrazeClient("http://127.0.0.1:9999", KEY)
    BrazeClient("http://127.0.0.1:9999", KEY, allow_local=True)


def test_key_not_in_repr_and_client_not_picklable():
    client = BrazeClient(BASE, KEY, transport=Script(json(201)).transport)
    assert KEY not in repr(client)
    assert BASE in repr(client)
    assert KEY not in client.workspace
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(client)


def test_track_body_must_be_bytes():
    client = client_for(Script(json(201)))
    with pytest.raises(TypeError):
        asyncio.run(client.track({"attributes": []}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        asyncio.run(client.track(b""))


# ---- delete -------------------------------------------------------------------------------------------


def test_delete_sends_external_ids_and_returns_the_count():
    script = Script(json(201, {"deleted": 3}))

    async def go():
        async with client_for(script) as client:
            return await client.delete(["a", "b", "c"])

    result = asyncio.run(go())
    assert result.deleted == 3
    assert result.status_code == 201
    assert result.attempts == 1
    (request,) = script.requests
    assert request.url.path == "/users/delete"
    assert orjson.loads(request.content) == {"external_ids": ["a", "b", "c"]}
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_delete_retries_like_track():
    script = Script(json(500), json(429, x_ratelimit_retry_after="0"), json(201, {"deleted": 1}))

    async def go():
        async with client_for(script) as client:
            return await client.delete(["a"])

    result = asyncio.run(go())
    assert (result.attempts, result.retries, result.rate_limited, result.possibly_duplicated) == (
        3,
        2,
        1,
        True,
    )


@pytest.mark.parametrize("ids", [[], [f"id{i}" for i in range(51)], ["ok", ""], ["ok", None]])
def test_delete_validates_before_sending(ids):
    script = Script(json(201, {"deleted": 0}))
    client = client_for(script)
    with pytest.raises(ValueError):  # noqa: PT011 - several distinct messages
        asyncio.run(client.delete(ids))
    assert script.requests == []


def test_delete_accepts_exactly_fifty():
    script = Script(json(201, {"deleted": 50}))

    async def go():
        async with client_for(script) as client:
            return await client.delete([f"id{i}" for i in range(50)])

    assert asyncio.run(go()).deleted == 50


def test_delete_403_names_the_delete_permission():
    async def go():
        async with client_for(Script(json(403))) as client:
            await client.delete(["a"])

    with pytest.raises(AuthenticationError, match=r"users\.delete permission"):
        asyncio.run(go())


# ---- waits --------------------------------------------------------------------------------------------


def timed_track(script: Script, **kwargs: Any):
    t0 = time.monotonic()
    result = track(script, **kwargs)
    return result, time.monotonic() - t0


def test_honours_x_ratelimit_retry_after():
    result, elapsed = timed_track(Script(json(429, x_ratelimit_retry_after="0.3"), json(201)))
    assert 0.3 <= elapsed < 0.6
    assert result.waited_seconds >= 0.3
    assert result.rate_limited == 1


def test_honours_reset_as_a_delta():
    _, elapsed = timed_track(Script(json(429, x_ratelimit_reset="0.3"), json(201)))
    assert 0.3 <= elapsed < 0.6


def test_honours_reset_as_an_epoch():
    def limited(_: httpx.Request) -> httpx.Response:
        return json(429, x_ratelimit_reset=f"{time.time() + 0.3:.3f}")

    _, elapsed = timed_track(Script(limited, json(201)))
    assert 0.25 <= elapsed < 0.6


def test_retry_after_wins_over_reset():
    _, elapsed = timed_track(Script(json(429, x_ratelimit_retry_after="0.1", x_ratelimit_reset="5"), json(201)))
    assert 0.1 <= elapsed < 0.4


def test_5xx_uses_backoff_not_the_window_reset():
    _, elapsed = timed_track(Script(json(503, x_ratelimit_reset="5"), json(201)))
    assert elapsed < 0.4


def test_exponential_backoff_with_full_jitter_is_capped():
    settings = BrazeSettings(backoff_base_seconds=0.05, backoff_max_seconds=0.08, max_retries=4)
    result, elapsed = timed_track(Script(json(503), json(503), json(503), json(503), json(201)), settings=settings)
    assert result.attempts == 5
    assert elapsed < 4 * 0.08 + 0.3  # each wait is at most the cap
    assert result.waited_seconds <= 4 * 0.08 + 0.01


def test_429_pauses_the_whole_workspace():
    limiter = fast_limiter()
    script = Script(json(429, x_ratelimit_retry_after="0.3"), json(201))

    async def go() -> float:
        async with client_for(script, track_limiter=limiter) as client:
            first = asyncio.create_task(client.track(BODY))
            await asyncio.sleep(0.05)  # the 429 has arrived by now
            t0 = time.monotonic()
            await limiter.acquire()  # another sender of the same workspace
            waited = time.monotonic() - t0
            await first
            return waited

    assert asyncio.run(go()) >= 0.2


def test_a_wait_longer_than_allowed_raises_at_once():
    limiter = fast_limiter()
    script = Script(json(429, x_ratelimit_retry_after="1800"), json(201))
    t0 = time.monotonic()
    with pytest.raises(RateLimited) as info:
        track(script, track_limiter=limiter, settings=BrazeSettings(max_retry_wait_seconds=1.0))
    assert time.monotonic() - t0 < 0.5
    assert info.value.retry_after == 1800
    assert info.value.attempts == 1
    assert "1800 s" in str(info.value)
    assert limiter.reserve() == pytest.approx(1.0, abs=0.1)  # others pause only up to the cap


def test_responses_feed_the_limiter():
    limiter = fast_limiter()
    track(Script(json(201, x_ratelimit_remaining="0", x_ratelimit_reset="0.4")), track_limiter=limiter)
    assert limiter.reserve() == pytest.approx(0.4, abs=0.1)


# ---- event loops and concurrency ----------------------------------------------------------------


def test_client_is_bound_to_its_first_event_loop():
    client = client_for(Script(json(201)))
    asyncio.run(client.track(BODY))
    with pytest.raises(RuntimeError, match="another event loop"):
        asyncio.run(client.track(BODY))


def test_concurrency_is_capped_by_settings():
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return json(201)

    async def go():
        async with BrazeClient(
            BASE,
            KEY,
            settings=BrazeSettings(concurrency=4),
            transport=httpx.MockTransport(handler),
            track_limiter=fast_limiter(),
        ) as client:
            return await asyncio.gather(*(client.track(BODY) for _ in range(20)))

    results = asyncio.run(go())
    assert all(r.status_code == 201 for r in results)
    assert peak == 4


def test_settings_validation():
    with pytest.raises(ValueError, match="max_retries"):
        BrazeSettings(max_retries=-1)
    with pytest.raises(ValueError, match="concurrency"):
        BrazeSettings(concurrency=0)
    with pytest.raises(ValueError, match="timeout_seconds"):
        BrazeSettings(timeout_seconds=0)


def test_default_limiters_are_shared_per_workspace():
    from masivo_braze_sync.braze import TRACK_BUCKET, limiters

    a = BrazeClient(BASE, KEY, transport=Script(json(201)).transport)
    b = BrazeClient(f"{BASE}/", KEY, transport=Script(json(201)).transport)
    other = BrazeClient(BASE, KEY + "-other", transport=Script(json(201)).transport)
    assert a.workspace == b.workspace != other.workspace
    shared = limiters.get(a.workspace, TRACK_BUCKET, 3000, 3.0)
    assert a._track_limiter is shared
    assert b._track_limiter is shared
    assert other._track_limiter is not shared
    assert a._delete_limiter is not shared
    assert (a._delete_limiter.limit, a._delete_limiter.window_seconds) == (20_000, 60.0)
