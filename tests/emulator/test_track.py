"""/users/track outcomes: partial success vs all-invalid, batch limits, what applying does, data
points and stats."""

from __future__ import annotations

import pytest

from masivo_braze_sync.emulator.validation import MSG_NO_VALID, MSG_TOO_MANY

T = "2024-05-01T12:00:00Z"


def attr(i: int, **fields) -> dict:
    return {"external_id": f"c{i}", **fields}


def event(i: int, name: str = "visit", **fields) -> dict:
    return {"external_id": f"c{i}", "name": name, "time": T, **fields}


def purchase(i: int, **fields) -> dict:
    return {
        "external_id": f"c{i}",
        "product_id": "sku",
        "currency": "MXN",
        "price": 10.0,
        "time": T,
        **fields,
    }


def test_partial_failure_is_201_with_errors_and_applies_the_valid_objects(client, ws, state) -> None:
    body = {
        "attributes": [attr(1, first_name="Ana"), attr(2, gender="X"), attr(3, points=5)],
        "events": [event(1), {"name": "visit", "time": T}],
        "purchases": [purchase(1, quantity=0)],
    }
    r = client.post("/users/track", json=body)
    assert r.status_code == 201
    out = r.json()
    assert out["message"] == "success"
    assert (out["attributes_processed"], out["events_processed"], out["purchases_processed"]) == (2, 1, 0)
    assert [(e["input_array"], e["index"]) for e in out["errors"]] == [
        ("attributes", 1),
        ("events", 1),
        ("purchases", 0),
    ]
    assert out["errors"][2]["type"] == "'quantity' is not valid"
    profiles = state.profiles(ws.name)
    assert set(profiles) == {"c1", "c3"}
    assert profiles["c1"].attributes == {"first_name": "Ana"}
    assert [e["name"] for e in profiles["c1"].events] == ["visit"]
    assert profiles["c1"].purchases == []
    stats = state.stats(ws.name)
    assert stats.objects == {"attributes": 2, "events": 1, "purchases": 0}
    assert stats.rejected_objects == 3


def test_all_invalid_is_400_with_every_error_and_nothing_applied(client, ws, state) -> None:
    body = {"attributes": [attr(1, dob="yesterday"), {"first_name": "x"}], "events": [event(1, name="")]}
    r = client.post("/users/track", json=body)
    assert r.status_code == 400
    out = r.json()
    assert out["message"] == MSG_NO_VALID
    assert [(e["input_array"], e["index"]) for e in out["errors"]] == [
        ("attributes", 0),
        ("attributes", 1),
        ("events", 0),
    ]
    assert state.profiles(ws.name) == {}
    assert state.stats(ws.name).status_counts == {400: 1}


def test_success_counts_only_the_arrays_sent(client) -> None:
    r = client.post("/users/track", json={"events": [event(1), event(2)]})
    assert r.json() == {"message": "success", "events_processed": 2}


@pytest.mark.parametrize(
    ("mode", "sizes", "ok"),
    [
        ("per_array", (75, 75, 75), True),
        ("per_array", (76, 0, 0), False),
        ("per_array", (0, 0, 76), False),
        ("combined", (25, 25, 25), True),
        ("combined", (75, 0, 0), True),
        ("combined", (38, 38, 0), False),
        ("combined", (0, 0, 76), False),
    ],
)
def test_batch_limits(http, make_ws, state, mode, sizes, ok) -> None:
    ws = make_ws(batch_mode=mode)
    n_attr, n_ev, n_pu = sizes
    body = {
        "attributes": [attr(i, n=i) for i in range(n_attr)],
        "events": [event(i) for i in range(n_ev)],
        "purchases": [purchase(i) for i in range(n_pu)],
    }
    r = http(ws.api_key).post("/users/track", json=body)
    if ok:
        assert r.status_code == 201
        assert r.json().get("errors") is None
        assert len(state.profiles(ws.name)) == max(sizes)
    else:
        assert r.status_code == 400
        assert r.json() == {"message": MSG_TOO_MANY}
        assert state.profiles(ws.name) == {}


def test_max_objects_is_configurable(http, make_ws) -> None:
    ws = make_ws(batch_mode="combined", max_objects=3)
    c = http(ws.api_key)
    assert c.post("/users/track", json={"attributes": [attr(1)], "events": [event(1), event(2)]}).status_code == 201
    r = c.post("/users/track", json={"attributes": [attr(1), attr(2)], "events": [event(1), event(2)]})
    assert r.status_code == 400


def test_attribute_operations(client, ws, state) -> None:
    steps = [
        attr(1, first_name="Ana", points=10, tags=["a", "b"], pet={"name": "Rex", "age": 3}, gone="x"),
        attr(1, points={"inc": 5}, tags={"add": ["c", "a"], "remove": ["b"]}, gone=None),
        attr(1, points={"inc": -3}, pet={"age": 4}, last_name="Diaz"),
        attr(1, pet={"vax": True}, _merge_objects=True),
        attr(1, cars=[{"id": 1, "make": "VW"}, {"id": 2, "make": "Fiat"}]),
        attr(
            1,
            cars={
                "$remove": [{"$identifier_key": "id", "$identifier_value": 1}],
                "$update": [{"$identifier_key": "id", "$identifier_value": 2, "$new_object": {"year": 2020}}],
                "$add": [{"id": 3, "make": "Kia"}],
            },
        ),
    ]
    for obj in steps:
        assert client.post("/users/track", json={"attributes": [obj]}).status_code == 201
    assert state.profile(ws.name, "c1").attributes == {
        "first_name": "Ana",
        "last_name": "Diaz",
        "points": 12,
        "tags": ["c", "a"],  # re-adding "a" moved it to the end
        "pet": {"age": 4, "vax": True},  # overwritten, then merged
        "cars": [{"id": 2, "make": "Fiat", "year": 2020}, {"id": 3, "make": "Kia"}],
    }


def test_inc_on_a_missing_attribute_starts_from_zero(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [attr(1, visits={"inc": 2})]})
    assert state.profile(ws.name, "c1").attributes == {"visits": 2}


def test_events_and_purchases_are_appended_as_received_duplicates_included(client, ws, state) -> None:
    ev = event(1, properties={"store": "S1"})
    pu = purchase(1, quantity=2, properties={"order": "o1"})
    for _ in range(2):
        assert client.post("/users/track", json={"events": [ev], "purchases": [pu]}).status_code == 201
    p = state.profile(ws.name, "c1")
    assert p.events == [{"name": "visit", "time": T, "properties": {"store": "S1"}}] * 2
    assert (
        p.purchases
        == [
            {
                "product_id": "sku",
                "currency": "MXN",
                "price": 10.0,
                "time": T,
                "quantity": 2,
                "properties": {"order": "o1"},
            }
        ]
        * 2
    )


def test_event_properties_beyond_256_are_dropped(client, ws, state) -> None:
    props = {f"p{i:03d}": i for i in range(300)}
    assert client.post("/users/track", json={"events": [event(1, properties=props)]}).status_code == 201
    stored = state.profile(ws.name, "c1").events[0]["properties"]
    assert list(stored) == [f"p{i:03d}" for i in range(256)]


def test_update_existing_only(client, ws, state) -> None:
    body = {
        "attributes": [attr(1, first_name="Ana", _update_existing_only=True)],
        "events": [event(2, _update_existing_only=True)],
    }
    r = client.post("/users/track", json=body)
    assert r.status_code == 201  # silently not applied, still "processed"
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 1}
    assert state.profiles(ws.name) == {}
    client.post("/users/track", json={"attributes": [attr(1)]})
    client.post("/users/track", json={"attributes": [attr(1, first_name="Ana", _update_existing_only=True)]})
    assert state.profile(ws.name, "c1").attributes == {"first_name": "Ana"}


def test_attributes_are_applied_before_events_in_one_request(client, ws, state) -> None:
    # the event is update-only: it lands only because the attributes object created the user first
    body = {"events": [event(1, _update_existing_only=True)], "attributes": [attr(1, first_name="Ana")]}
    assert client.post("/users/track", json=body).status_code == 201
    assert len(state.profile(ws.name, "c1").events) == 1


def test_alias_defaults_are_update_only(client, ws, state) -> None:
    alias = {"user_alias": {"alias_name": "n1", "alias_label": "crm"}}
    client.post(
        "/users/track",
        json={"attributes": [{**alias, "first_name": "Ana"}], "events": [{**alias, "name": "e", "time": T}]},
    )
    assert state.anonymous_profiles(ws.name) == {}
    client.post("/users/track", json={"attributes": [{**alias, "first_name": "Ana", "_update_existing_only": False}]})
    client.post("/users/track", json={"events": [{**alias, "name": "e", "time": T}]})
    (profile,) = state.anonymous_profiles(ws.name).values()
    assert profile.attributes == {"first_name": "Ana"}
    assert len(profile.events) == 1
    assert state.profiles(ws.name) == {}


def test_email_only_objects_update_the_identified_profile_holding_that_email(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [attr(1, email="ana@example.com")]})
    client.post("/users/track", json={"attributes": [{"email": "ana@example.com", "tier": "gold"}]})
    client.post("/users/track", json={"attributes": [{"email": "new@example.com", "tier": "silver"}]})
    assert state.profile(ws.name, "c1").attributes == {"email": "ana@example.com", "tier": "gold"}
    (anon,) = state.anonymous_profiles(ws.name).values()
    assert anon.attributes == {"email": "new@example.com", "tier": "silver"}


def test_braze_id_updates_but_never_creates(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [{"braze_id": "ffff", "tier": "gold"}]})
    assert state.profiles(ws.name) == {}
    client.post("/users/track", json={"attributes": [attr(1)]})
    bid = state.profile(ws.name, "c1").braze_id
    client.post("/users/track", json={"attributes": [{"braze_id": bid, "tier": "gold"}]})
    assert state.profile(ws.name, "c1").attributes == {"tier": "gold"}


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ([attr(1, first_name="Ana", last_name="Diaz")], 2),
        ([attr(1, first_name="Ana"), attr(1, first_name="Ana")], 2),  # unchanged values are billed
        ([attr(1, first_name=None)], 1),  # removing is a write
        ([attr(1, _update_existing_only=False, _merge_objects=True)], 0),  # control keys are free
        ([attr(1, email_subscribe="opted_in", push_subscribe="subscribed")], 0),  # subscriptions are free
        ([attr(1, email="a@b.co", phone="+1")], 2),  # with a primary id they are profile fields
        ([{"email": "a@b.co", "tier": "gold"}], 1),  # the identifying email is not billed
        ([attr(1, points={"inc": 1})], 1),
        ([attr(1, tags={"add": ["a", "b"], "remove": ["c"]})], 3),  # 1 per value added or removed
        ([attr(1, pet={"name": "Rex", "vet": {"city": "MTY", "phone": "1"}})], 4),  # every nested key
        ([attr(1, first_name="Ana"), attr(2, gender="X")], 1),  # rejected objects are not billed
        ([attr(1, first_name="Ana", _update_existing_only=True)], 0),  # not applied, not billed
    ],
)
def test_data_points(client, ws, state, objects, expected) -> None:
    assert client.post("/users/track", json={"attributes": objects}).status_code == 201
    assert state.stats(ws.name).data_points == expected


def test_events_and_purchases_do_not_count_attribute_data_points(client, ws, state) -> None:
    client.post("/users/track", json={"events": [event(1)], "purchases": [purchase(1)]})
    assert state.stats(ws.name).data_points == 0


def test_stats_snapshot(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [attr(1), attr(2, gender="Q")]})
    client.post("/users/track", json={"attributes": [{"first_name": "x"}]})
    client.post("/users/delete", json={"external_ids": ["c1"]})
    stats = state.stats(ws.name)
    assert stats.requests == 3
    assert stats.requests_by_path == {"/users/track": 2, "/users/delete": 1}
    assert stats.status_counts == {201: 2, 400: 1}
    assert stats.objects == {"attributes": 1, "events": 0, "purchases": 0}
    assert stats.rejected_objects == 2
    assert stats.deleted == 1
    assert stats.max_in_window == 2
    assert len(stats.request_times) == 2  # track requests only
    stats.requests_by_path.clear()  # a snapshot: changing it changes nothing
    assert state.stats(ws.name).requests_by_path["/users/track"] == 2


def test_profile_reads_are_copies(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [attr(1, first_name="Ana")]})
    p = state.profile(ws.name, "c1")
    p.attributes["first_name"] = "Bea"
    p.events.append({"name": "fake"})
    assert state.profile(ws.name, "c1").attributes == {"first_name": "Ana"}
    assert state.profile(ws.name, "c1").events == []


def test_reset_forgets_data_but_keeps_workspaces(client, ws, state) -> None:
    client.post("/users/track", json={"attributes": [attr(1)]})
    state.reset()
    assert state.profiles(ws.name) == {}
    assert state.stats(ws.name).requests == 0
    assert client.post("/users/track", json={"attributes": [attr(1)]}).status_code == 201


def test_unknown_workspace_raises_key_error(state) -> None:
    with pytest.raises(KeyError):
        state.stats("nope")
    with pytest.raises(KeyError):
        state.profile("nope", "c1")


# -- as lenient as Braze's documentation (issue 13) -----------------------------------------------


def test_nested_event_property_keys_may_hold_dots_and_spaces(client, ws, state) -> None:
    # custom event docs: a property with `.` is matched in filters by quoting it; the nested
    # custom-attribute key rules (no `.`, no spaces) are not event-property rules
    props = {"r details": {"loc.city": "Cali", "a b": [{"x.y": 1}]}}
    r = client.post("/users/track", json={"events": [event(1, properties=props)]})
    assert r.status_code == 201, r.json()
    assert state.profile(ws.name, "c1").events[0]["properties"] == props


@pytest.mark.parametrize(("sent", "stored"), [("au", "AU"), ("Narnia", None), ("AU", "AU")])
def test_an_unrecognised_country_is_stored_as_null_not_refused(client, ws, state, sent, stored) -> None:
    r = client.post("/users/track", json={"attributes": [attr(1, country=sent, first_name="Ana")]})
    assert r.status_code == 201, r.json()
    profile = state.profile(ws.name, "c1")
    assert profile.attributes.get("country") == stored
    assert profile.attributes["first_name"] == "Ana"


def test_a_null_event_property_is_refused(client, ws, state) -> None:
    # Braze documents numbers, booleans, datetimes, strings, arrays and objects only; the emulator
    # is strict where the documentation is silent
    r = client.post("/users/track", json={"events": [event(1, properties={"a": None})]})
    assert r.status_code == 400
