"""Fixed-window rate limits per workspace and bucket, and the x-ratelimit-* headers (docs/braze.md#rate-limit-headers).

Most tests pin the state's clock so that windows are exact; one uses the real clock.
"""

from __future__ import annotations

import math
import time

import pytest

BODY = {"attributes": [{"external_id": "c1", "points": {"inc": 1}}]}


def test_the_request_over_the_limit_gets_429_and_is_not_applied(http, make_ws, state, clock) -> None:
    ws = make_ws(rate_limit=5, rate_window_seconds=1.0)
    c = http(ws.api_key)
    clock.set(1_000_000.25)  # window [1_000_000, 1_000_001)
    for i in range(5):
        r = c.post("/users/track", json=BODY)
        assert r.status_code == 201
        assert r.headers["x-ratelimit-limit"] == "5"
        assert r.headers["x-ratelimit-remaining"] == str(4 - i)
        assert r.headers["x-ratelimit-reset"] == "1000001"  # epoch seconds at the window's end
    r = c.post("/users/track", json=BODY)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-retry-after"] == "1"
    assert r.headers["x-ratelimit-reset"] == "1000001"
    # Braze's rate-limit page: every answer carries the three headers, a 429 too
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("5", "0")
    assert state.profile(ws.name, "c1").attributes == {"points": 5}  # the 429 changed nothing

    clock.advance(1.0)  # the next window
    r = c.post("/users/track", json=BODY)
    assert r.status_code == 201
    assert r.headers["x-ratelimit-remaining"] == "4"
    assert state.profile(ws.name, "c1").attributes == {"points": 6}

    stats = state.stats(ws.name)
    assert stats.requests == 7
    assert stats.rate_limited == 1
    assert stats.status_counts == {201: 6, 429: 1}
    assert stats.max_in_window == 5
    assert len(stats.request_times) == 6


def test_every_later_request_in_the_window_gets_429(http, make_ws, state, clock) -> None:
    ws = make_ws(rate_limit=2, rate_window_seconds=10.0)
    c = http(ws.api_key)
    clock.set(5_000_003.0)  # window [5_000_000, 5_000_010): aligned to multiples of 10 s
    statuses = [c.post("/users/track", json=BODY).status_code for _ in range(5)]
    assert statuses == [201, 201, 429, 429, 429]
    r = c.post("/users/track", json=BODY)
    assert r.headers["x-ratelimit-retry-after"] == "7"
    assert r.headers["x-ratelimit-reset"] == "5000010"
    assert state.stats(ws.name).rate_limited == 4


def test_delta_reset_style(http, make_ws, clock) -> None:
    ws = make_ws(rate_limit=1, rate_window_seconds=3.0, reset_header_style="delta")
    c = http(ws.api_key)
    clock.set(999.2)  # window [999, 1002)
    r = c.post("/users/track", json=BODY)
    assert r.headers["x-ratelimit-reset"] == "3"  # ceil(1002 - 999.2)
    r = c.post("/users/track", json=BODY)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-retry-after"] == "3"
    assert r.headers["x-ratelimit-reset"] == "3"


def test_retry_after_is_at_least_one_second(http, make_ws, clock) -> None:
    ws = make_ws(rate_limit=1, rate_window_seconds=1.0)
    c = http(ws.api_key)
    clock.set(2_000_000.9999)
    c.post("/users/track", json=BODY)
    r = c.post("/users/track", json=BODY)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-retry-after"] == "1"


def test_track_and_delete_have_separate_buckets(http, make_ws, clock) -> None:
    ws = make_ws(rate_limit=1, delete_rate_limit=2, delete_rate_window_seconds=60.0)
    c = http(ws.api_key)
    clock.set(6_000_000.0)
    assert c.post("/users/track", json=BODY).status_code == 201
    assert c.post("/users/track", json=BODY).status_code == 429
    deletes = [c.post("/users/delete", json={"external_ids": ["x"]}) for _ in range(3)]
    assert [r.status_code for r in deletes] == [201, 201, 429]
    assert deletes[0].headers["x-ratelimit-limit"] == "2"
    assert deletes[0].headers["x-ratelimit-reset"] == "6000060"


def test_workspaces_have_separate_buckets(http, make_ws, clock) -> None:
    a, b = make_ws(rate_limit=1), make_ws(rate_limit=1)
    clock.set(7_000_000.0)
    assert http(a.api_key).post("/users/track", json=BODY).status_code == 201
    assert http(a.api_key).post("/users/track", json=BODY).status_code == 429
    assert http(b.api_key).post("/users/track", json=BODY).status_code == 201


def test_rejected_requests_also_count_against_the_limit(http, make_ws, clock) -> None:
    # Braze counts requests, not valid ones
    ws = make_ws(rate_limit=2)
    c = http(ws.api_key)
    clock.set(8_000_000.0)
    assert c.post("/users/track", content=b"nope").status_code == 400
    assert c.post("/users/track", json={"attributes": [{"first_name": "x"}]}).status_code == 400
    assert c.post("/users/track", json=BODY).status_code == 429


@pytest.mark.parametrize("window", [1.0, 3.0])
def test_real_clock_reset_is_the_window_end_in_epoch_seconds(http, make_ws, window) -> None:
    ws = make_ws(rate_window_seconds=window)
    before = time.time()
    r = http(ws.api_key).post("/users/track", json=BODY)
    after = time.time()
    reset = int(r.headers["x-ratelimit-reset"])
    assert reset % window == 0
    assert math.floor(before / window) * window < reset <= math.ceil(after / window) * window + window


def test_a_competing_producer_takes_its_share_evenly_over_the_window(http, make_ws, state, clock) -> None:
    # 10 per 1 s, another producer takes 4/s: by mid-window it has used 2, by 0.9 s 3
    ws = make_ws(rate_limit=10, rate_window_seconds=1.0, competing_per_second=4.0)
    c = http(ws.api_key)
    clock.set(2_000_000.5)
    r = c.post("/users/track", json=BODY)
    assert r.headers["x-ratelimit-remaining"] == "7"  # 10 - ours (1) - theirs (2)
    for _ in range(5):
        assert c.post("/users/track", json=BODY).status_code == 201
    clock.set(2_000_000.9)
    r = c.post("/users/track", json=BODY)  # ours 7 + theirs 3 = 10: the last one
    assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (201, "0")
    r = c.post("/users/track", json=BODY)
    assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (429, "0")
    clock.set(2_000_001.0)  # a new window: the competitor starts from nothing too
    assert c.post("/users/track", json=BODY).headers["x-ratelimit-remaining"] == "9"
    assert state.stats(ws.name).max_in_window == 7  # ours only


def test_competing_per_second_must_be_sane(make_ws) -> None:
    with pytest.raises(ValueError, match="competing_per_second"):
        make_ws(competing_per_second=-1.0)
