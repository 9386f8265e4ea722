"""Property tests: whatever JSON arrives, validation and applying never crash, and every object is
either accepted or reported exactly once."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masivo_braze_sync.emulator.apply import Store, apply_delete, apply_track
from masivo_braze_sync.emulator.validation import Fatal, TrackPlan, check_delete, check_track

KEYS = [
    "external_id", "user_alias", "braze_id", "email", "phone", "name", "time", "properties",
    "product_id", "currency", "price", "quantity", "dob", "gender", "country", "first_name",
    "_update_existing_only", "_merge_objects", "points", "tags", "pet", "$bad", "", "a.b",
    "alias_name", "alias_label", "inc", "add", "remove", "$add", "$remove", "$update", "$time",
    "$identifier_key", "$identifier_value", "$new_object",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["c1", "USD", "M", "MX", "2024-05-01T12:00:00Z", "1980-12-21", "a@b.co", "opted_in"]),
    st.text(max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "attributes": st.lists(objects | json_values, max_size=6),
            "events": st.lists(objects | json_values, max_size=6),
            "purchases": st.lists(objects | json_values, max_size=6),
        },
    ),
    json_values,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, mode=st.sampled_from(["per_array", "combined"]))
def test_track_validation_and_apply_never_crash(body, mode) -> None:
    plan = check_track(body, max_objects=75, batch_mode=mode)
    if isinstance(plan, Fatal):
        assert plan.status == 400
        return
    assert isinstance(plan, TrackPlan)
    sent = sum(len(body.get(a, [])) for a in ("attributes", "events", "purchases"))
    assert sum(len(v) for v in plan.valid.values()) + len(plan.errors) == sent
    store = Store()
    assert apply_track(store, plan) >= 0
    apply_track(store, plan)  # applying twice (a retried request) is fine too


@settings(max_examples=80, deadline=None)
@given(body=json_values | st.dictionaries(st.sampled_from(["external_ids", "braze_ids", "user_aliases"]), json_values))
def test_delete_validation_never_crashes(body) -> None:
    checked = check_delete(body, max_ids=50)
    if not isinstance(checked, Fatal):
        apply_delete(Store(), *checked)
