"""The admin HTTP API under /_emulator/ (for benchmarks and out-of-process use)."""

from __future__ import annotations

from urllib.parse import quote

from masivo_braze_sync.emulator import Fault


def test_create_workspace_then_use_it(anon, http, state) -> None:
    r = anon.post(
        "/_emulator/workspaces",
        json={"name": "adm-1", "api_key": "adm-key", "rate_limit": 2, "permissions": ["users.track"]},
    )
    assert r.status_code == 201
    ws = state.workspaces()["adm-1"]
    assert ws.rate_limit == 2
    assert ws.permissions == frozenset({"users.track"})
    c = http("adm-key")
    assert c.post("/users/track", json={"attributes": [{"external_id": "c1"}]}).status_code == 201
    assert c.post("/users/delete", json={"external_ids": ["c1"]}).status_code == 403
    assert "adm-1" in anon.get("/_emulator/workspaces").json()["workspaces"]
    state.remove_workspace("adm-1")


def test_bad_workspace_fields_are_400(anon) -> None:
    assert anon.post("/_emulator/workspaces", json={"name": "x", "api_key": "y", "colour": 1}).status_code == 400
    assert anon.post("/_emulator/workspaces", json={"name": "x", "api_key": "y", "batch_mode": "?"}).status_code == 400
    assert anon.post("/_emulator/workspaces", json={"name": "x"}).status_code == 400
    assert anon.post("/_emulator/workspaces", content=b"[").status_code == 400


def test_faults_add_list_and_clear(anon, client, ws, state) -> None:
    r = anon.post("/_emulator/faults", json={"kind": "status", "status": 503, "workspace": ws.name})
    assert r.status_code == 201
    r = anon.post("/_emulator/faults", json=[{"kind": "rate_limit"}, {"kind": "timeout", "delay_seconds": 5}])
    assert r.json() == {"added": 2}
    assert [f["kind"] for f in anon.get("/_emulator/faults").json()["faults"]] == [
        "status",
        "rate_limit",
        "timeout",
    ]
    assert client.post("/users/track", json={"attributes": [{"external_id": "c1"}]}).status_code == 503
    assert anon.delete("/_emulator/faults").status_code == 200
    assert state.faults() == []
    assert client.post("/users/track", json={"attributes": [{"external_id": "c1"}]}).status_code == 201
    assert anon.post("/_emulator/faults", json={"kind": "nope"}).status_code == 400


def test_stats_and_users(anon, client, ws) -> None:
    ext = "id/with space"
    client.post("/users/track", json={"attributes": [{"external_id": ext, "tier": "gold"}, {"first_name": "x"}]})
    stats = anon.get(f"/_emulator/workspaces/{ws.name}/stats").json()
    assert stats["requests"] == 1
    assert stats["status_counts"] == {"201": 1}
    assert stats["rejected_objects"] == 1
    assert stats["data_points"] == 1
    assert len(stats["request_times"]) == 1
    user = anon.get(f"/_emulator/workspaces/{ws.name}/users/{quote(ext, safe='')}")
    assert user.status_code == 200
    assert user.json()["attributes"] == {"tier": "gold"}
    assert user.json()["external_id"] == ext
    assert anon.get(f"/_emulator/workspaces/{ws.name}/users/nobody").status_code == 404
    assert anon.get("/_emulator/workspaces/nope/stats").status_code == 404
    assert anon.get("/_emulator/nothing").status_code == 404


def test_deleted_ids(anon, client, ws) -> None:
    client.post("/users/delete", json={"external_ids": ["a", "b"]})
    assert anon.get(f"/_emulator/workspaces/{ws.name}/deleted").json() == {"deleted_ids": ["a", "b"]}


def test_reset(anon, client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [{"external_id": "c1"}]})
    state.add_fault(Fault(kind="reset"))
    assert anon.post("/_emulator/reset").status_code == 200
    assert state.profiles(ws.name) == {}
    assert state.faults() == []
    assert ws.name in state.workspaces()
