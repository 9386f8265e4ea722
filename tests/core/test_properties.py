"""Flattening and cleaning event properties (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masivo_braze_sync.errors import RecordRejected
from masivo_braze_sync.properties import MAX_PROPERTIES, flatten_properties


def test_nested_objects_and_arrays_flatten_to_parent_child_keys() -> None:
    props = {"store": {"id": 7, "geo": {"city": "Bogotá"}}, "items": [{"sku": "a"}, {"sku": "b"}], "ok": True}
    assert flatten_properties(props) == {
        "store_id": 7,
        "store_geo_city": "Bogotá",
        "items_0_sku": "a",
        "items_1_sku": "b",
        "ok": True,
    }


def test_leading_dollar_is_removed_and_reserved_keys_renamed() -> None:
    assert flatten_properties({"$source": "x", "time": 1, "event_name": "y"}) == {
        "source": "x",
        "masivo_time": 1,
        "masivo_event_name": "y",
    }


def test_empty_containers_and_nulls() -> None:
    assert flatten_properties({"a": {}, "b": [], "c": None}) == {}  # nulls are not sent
    assert flatten_properties(None) == {}


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"a": {"b": 1}, "a_b": 2}, "collide"),
        ({"$": 1}, "empty"),
        ({"k" * 256: 1}, "longer than 255"),
        ({"note": "x" * 256}, "'note' is longer than 255"),
        ({f"k{i}": i for i in range(MAX_PROPERTIES + 1)}, "more than 256"),
        ({"x": float("nan")}, "finite"),
    ],
)
def test_rows_that_cannot_be_made_valid_are_rejected_with_a_reason(props: dict, reason: str) -> None:
    with pytest.raises(RecordRejected, match=reason):
        flatten_properties(props)


def test_a_255_character_value_is_kept() -> None:
    assert flatten_properties({"note": "x" * 255}) == {"note": "x" * 255}


def test_deep_nesting_is_rejected_not_a_crash() -> None:
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    node["leaf"] = 1
    with pytest.raises(RecordRejected, match="nested deeper"):
        flatten_properties(deep)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_is_flattened_to_valid_scalars_or_rejected(props: dict) -> None:
    try:
        out = flatten_properties(props)
    except RecordRejected as exc:
        reason = exc.reason
        assert reason
        return
    assert len(out) <= MAX_PROPERTIES
    for key, value in out.items():
        assert key
        assert not key.startswith("$")
        assert len(key) <= 255
        assert key not in ("time", "event_name")
        assert value is None or isinstance(value, str | int | float | bool)
        if isinstance(value, str):
            assert len(value) <= 255


def test_null_values_are_dropped_not_sent() -> None:
    # Braze documents numbers, booleans, datetimes, strings, arrays and objects: no null
    assert flatten_properties({"a": None, "b": {"c": None, "d": 1}, "e": [None, 2]}) == {"b_d": 1, "e_1": 2}


def test_truncation_keeps_the_shallowest_properties_in_order() -> None:
    from masivo_braze_sync.properties import flatten_truncated

    props = {"deep": {"x": {"y": 1}}, "items": [{"a": i, "b": i} for i in range(200)], "top": 1}
    kept, total = flatten_truncated(props, MAX_PROPERTIES)
    assert total == 402
    assert len(kept) == MAX_PROPERTIES
    assert list(kept)[:3] == ["deep_x_y", "items_0_a", "items_0_b"]  # the original order is kept
    assert kept["top"] == 1
    assert kept["deep_x_y"] == 1
    assert "items_126_b" in kept
    assert "items_127_a" not in kept
    assert flatten_truncated({"a": 1}, MAX_PROPERTIES) == ({"a": 1}, 1)
