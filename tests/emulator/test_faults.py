"""Injected faults: what the client sees and whether the request was applied."""

from __future__ import annotations

import time

import httpx
import pytest

from masivo_braze_sync.emulator import Fault

EVENT = {"events": [{"external_id": "c1", "name": "visit", "time": "2024-05-01T12:00:00Z"}]}


def events(state, ws) -> int:
    p = state.profile(ws.name, "c1")
    return 0 if p is None else len(p.events)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_status_fault_answers_without_applying(client, ws, state, status) -> None:
    state.add_fault(Fault(kind="status", status=status, count=2, workspace=ws.name, path="/users/track"))
    for _ in range(2):
        r = client.post("/users/track", json=EVENT)
        assert r.status_code == status
        assert isinstance(r.json()["message"], str)
        assert "x-ratelimit-remaining" in r.headers
    assert events(state, ws) == 0
    assert client.post("/users/track", json=EVENT).status_code == 201  # count used up
    assert events(state, ws) == 1
    stats = state.stats(ws.name)
    assert stats.status_counts == {status: 2, 201: 1}
    assert stats.faults_injected == {"status": 2}
    assert state.faults() == []


def test_faults_match_workspace_and_path(http, make_ws, state) -> None:
    a, b = make_ws(), make_ws()
    state.add_fault(Fault(kind="status", status=503, workspace=a.name, path="/users/delete"))
    assert http(b.api_key).post("/users/delete", json={"external_ids": ["c1"]}).status_code == 201
    assert http(a.api_key).post("/users/track", json=EVENT).status_code == 201
    assert http(a.api_key).post("/users/delete", json={"external_ids": ["c1"]}).status_code == 503
    assert state.deleted_ids(a.name) == []


def test_rate_limit_fault_is_a_429_not_applied(client, ws, state) -> None:
    state.add_fault(Fault(kind="rate_limit"))
    r = client.post("/users/track", json=EVENT)
    assert r.status_code == 429
    assert int(r.headers["x-ratelimit-retry-after"]) >= 1
    assert "x-ratelimit-reset" in r.headers
    assert events(state, ws) == 0
    assert state.stats(ws.name).rate_limited == 1


def test_timeout_fault_delays_and_does_not_apply(http, ws, state) -> None:
    state.add_fault(Fault(kind="timeout", delay_seconds=0.6))
    with pytest.raises(httpx.ReadTimeout):
        http(ws.api_key, timeout=0.2).post("/users/track", json=EVENT)
    time.sleep(0.6)  # past the delay: the server has answered by now, and still applied nothing
    assert events(state, ws) == 0
    state.add_fault(Fault(kind="timeout", delay_seconds=0.2))
    started = time.monotonic()
    r = http(ws.api_key).post("/users/track", json=EVENT)
    assert time.monotonic() - started >= 0.2
    assert r.status_code == 504
    assert events(state, ws) == 0


def test_applied_then_500_applies_and_a_retry_duplicates(client, ws, state) -> None:
    state.add_fault(Fault(kind="applied_then_500", workspace=ws.name))
    r = client.post("/users/track", json={**EVENT, "attributes": [{"external_id": "c1", "tier": "gold"}]})
    assert r.status_code == 500
    assert state.profile(ws.name, "c1").attributes == {"tier": "gold"}
    assert events(state, ws) == 1
    assert client.post("/users/track", json=EVENT).status_code == 201  # the client's retry
    assert events(state, ws) == 2  # Braze has no idempotency: the event is now there twice


def test_applied_then_500_on_delete(client, ws, state) -> None:
    client.post("/users/track", json=EVENT)
    state.add_fault(Fault(kind="applied_then_500", path="/users/delete"))
    assert client.post("/users/delete", json={"external_ids": ["c1"]}).status_code == 500
    assert state.profile(ws.name, "c1") is None
    assert state.deleted_ids(ws.name) == ["c1"]


def test_reset_drops_the_connection_without_a_response(client, ws, state) -> None:
    state.add_fault(Fault(kind="reset", count=2))
    for _ in range(2):
        with pytest.raises(httpx.TransportError):  # ReadError / RemoteProtocolError
            client.post("/users/track", json=EVENT)
    assert events(state, ws) == 0
    assert client.post("/users/track", json=EVENT).status_code == 201
    stats = state.stats(ws.name)
    assert stats.faults_injected == {"reset": 2}
    assert stats.status_counts == {201: 1}


def test_probability_one_hits_every_request_until_cleared(client, ws, state) -> None:
    state.add_fault(Fault(kind="status", status=502, probability=1.0))
    assert [client.post("/users/track", json=EVENT).status_code for _ in range(5)] == [502] * 5
    state.clear_faults()
    assert client.post("/users/track", json=EVENT).status_code == 201


def test_probability_zero_never_hits(client, state) -> None:
    state.add_fault(Fault(kind="status", status=502, probability=0.0))
    assert {client.post("/users/track", json=EVENT).status_code for _ in range(20)} == {201}


def test_probability_half_hits_about_half(client, ws, state) -> None:
    state.add_fault(Fault(kind="status", status=503, probability=0.5))
    statuses = [client.post("/users/track", json=EVENT).status_code for _ in range(200)]
    hits = statuses.count(503)
    assert 50 < hits < 150  # binomial(200, 0.5): outside this range about once in 10^12 runs
    assert events(state, ws) == 200 - hits


def test_a_429_from_the_limiter_does_not_consume_a_fault(http, make_ws, state, clock) -> None:
    ws = make_ws(rate_limit=1)
    clock.set(9_000_000.0)
    c = http(ws.api_key)
    assert c.post("/users/track", json=EVENT).status_code == 201
    state.add_fault(Fault(kind="status", status=503))
    assert c.post("/users/track", json=EVENT).status_code == 429
    clock.advance(3.0)
    assert c.post("/users/track", json=EVENT).status_code == 503


def test_the_callers_fault_object_is_not_mutated(client, state) -> None:
    fault = Fault(kind="status", count=2)
    state.add_fault(fault)
    client.post("/users/track", json=EVENT)
    assert fault.count == 2
    assert [f.count for f in state.faults()] == [1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "explode"},
        {"kind": "status", "count": 0},
        {"kind": "status", "probability": 1.5},
        {"kind": "status", "status": 42},
    ],
)
def test_invalid_faults_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match=r"kind|count|probability|status"):
        Fault(**kwargs)
