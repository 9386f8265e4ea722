"""Authentication, permissions and routing: 401 / 403 / 404 / 405, never a redirect."""

from __future__ import annotations

import httpx
import pytest

TRACK = {"attributes": [{"external_id": "c1", "first_name": "Ana"}]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": 'Bearer "{key}"'},  # Braze answers 401 to a quoted key
        {"Authorization": "Basic {key}"},
        {"Authorization": "{key}"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown", "quoted", "basic", "no-scheme", "empty"],
)
def test_bad_or_missing_key_is_401_and_the_key_is_not_echoed(anon, ws, state, headers) -> None:
    headers = {k: v.format(key=ws.api_key) for k, v in headers.items()}
    r = anon.post("/users/track", json=TRACK, headers=headers)
    assert r.status_code == 401
    assert r.json()["message"].startswith("Invalid API key")
    assert ws.api_key not in r.text
    assert "not-a-key" not in r.text
    assert state.profile(ws.name, "c1") is None


def test_scheme_is_case_insensitive(anon, ws) -> None:
    r = anon.post("/users/track", json=TRACK, headers={"authorization": f"bearer {ws.api_key}"})
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("permissions", "path", "body"),
    [
        ({"users.delete"}, "/users/track", TRACK),
        ({"users.track"}, "/users/delete", {"external_ids": ["c1"]}),
        (set(), "/users/track", TRACK),
    ],
)
def test_key_without_the_endpoint_permission_is_403(anon, make_ws, state, permissions, path, body) -> None:
    ws = make_ws(permissions=frozenset(permissions))
    r = anon.post(path, json=body, headers={"Authorization": f"Bearer {ws.api_key}"})
    assert r.status_code == 403
    assert r.json() == {"message": "Access Denied"}
    assert state.profile(ws.name, "c1") is None
    stats = state.stats(ws.name)
    assert stats.requests == 1
    assert stats.status_counts == {403: 1}


@pytest.mark.parametrize("path", ["/users/export/ids", "/users/track/", "/users/track/sync", "/", "/users"])
def test_unknown_path_is_404_without_redirect(client, path) -> None:
    r = client.post(path, json=TRACK, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(client, method) -> None:
    r = client.request(method, "/users/track")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_each_workspace_key_maps_to_its_own_profiles(base_url, make_ws, state) -> None:
    a, b = make_ws(), make_ws()
    for ws, name in ((a, "Ana"), (b, "Bea")):
        body = {"attributes": [{"external_id": "c1", "first_name": name}]}
        r = httpx.post(f"{base_url}/users/track", json=body, headers={"Authorization": f"Bearer {ws.api_key}"})
        assert r.status_code == 201
    assert state.profile(a.name, "c1").attributes == {"first_name": "Ana"}
    assert state.profile(b.name, "c1").attributes == {"first_name": "Bea"}


def test_a_key_cannot_belong_to_two_workspaces(make_ws) -> None:
    ws = make_ws()
    with pytest.raises(ValueError, match="already used"):
        make_ws(api_key=ws.api_key)
