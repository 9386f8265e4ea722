"""POST /users/delete (docs/braze.md#deleting-users)."""

from __future__ import annotations

import pytest


def seed(client, n: int) -> None:
    for start in range(0, n, 75):
        objs = [{"external_id": f"c{i}", "n": i} for i in range(start, min(n, start + 75))]
        assert client.post("/users/track", json={"attributes": objs}).status_code == 201


def test_fifty_ids_are_deleted(client, ws, state) -> None:
    seed(client, 60)
    ids = [f"c{i}" for i in range(50)]
    r = client.post("/users/delete", json={"external_ids": ids})
    assert r.status_code == 201
    assert r.json() == {"deleted": 50, "message": "success"}
    assert set(state.profiles(ws.name)) == {f"c{i}" for i in range(50, 60)}
    assert state.deleted_ids(ws.name) == ids
    assert state.stats(ws.name).deleted == 50


def test_fifty_one_ids_are_400_and_nothing_is_deleted(client, ws, state) -> None:
    seed(client, 51)
    r = client.post("/users/delete", json={"external_ids": [f"c{i}" for i in range(51)]})
    assert r.status_code == 400
    assert "max number" in r.json()["message"]
    assert len(state.profiles(ws.name)) == 51
    assert state.deleted_ids(ws.name) == []


def test_max_delete_ids_is_configurable(http, make_ws) -> None:
    ws = make_ws(max_delete_ids=2)
    assert http(ws.api_key).post("/users/delete", json={"external_ids": ["a", "b", "c"]}).status_code == 400


def test_unknown_ids_are_queued_too(client, ws, state) -> None:
    r = client.post("/users/delete", json={"external_ids": ["ghost"]})
    assert r.json() == {"deleted": 1, "message": "success"}
    assert state.deleted_ids(ws.name) == ["ghost"]


def test_a_deleted_user_is_recreated_by_a_later_track(client, ws, state) -> None:
    # why the sync must never send anything queued for a customer after its delete
    seed(client, 1)
    client.post("/users/delete", json={"external_ids": ["c0"]})
    client.post("/users/track", json={"attributes": [{"external_id": "c0", "late": True}]})
    assert state.profile(ws.name, "c0").attributes == {"late": True}


@pytest.mark.parametrize(
    "body",
    [
        {"external_ids": ["c0"], "braze_ids": ["b"]},  # one identifier type per request
        {},
        {"external_ids": []},
        {"external_ids": "c0"},
        {"external_ids": ["c0", ""]},
        {"external_ids": ["c0", 7]},
        {"user_aliases": [{"alias_name": "n"}]},
        {"email_addresses": [{"email": "a@b.co", "prioritization": ["identified", "unidentified"]}]},
        {"email_addresses": [{"email": "nope", "prioritization": ["identified"]}]},
        [],
    ],
)
def test_malformed_delete_is_400_and_deletes_nothing(client, ws, state, body) -> None:
    seed(client, 1)
    r = client.post("/users/delete", json=body)
    assert r.status_code == 400
    assert set(state.profiles(ws.name)) == {"c0"}


def test_delete_by_alias_braze_id_and_email(client, ws, state) -> None:
    alias = {"alias_name": "n1", "alias_label": "crm"}
    client.post(
        "/users/track",
        json={
            "attributes": [
                {"user_alias": alias, "_update_existing_only": False, "a": 1},
                {"external_id": "c1"},
                {"external_id": "c2", "email": "bea@example.com"},
            ]
        },
    )
    assert client.post("/users/delete", json={"user_aliases": [alias]}).status_code == 201
    assert state.anonymous_profiles(ws.name) == {}
    bid = state.profile(ws.name, "c1").braze_id
    assert client.post("/users/delete", json={"braze_ids": [bid]}).status_code == 201
    email = {"email": "bea@example.com", "prioritization": ["identified"]}
    assert client.post("/users/delete", json={"email_addresses": [email]}).status_code == 201
    assert state.profiles(ws.name) == {}
    assert state.deleted_ids(ws.name) == ["c1", "c2"]


def test_unparsable_delete_body_is_400(client) -> None:
    r = client.post("/users/delete", content=b"{nope")
    assert r.status_code == 400
    assert r.json() == {"message": "Bad Request"}
