"""Packing objects into Braze requests."""

from __future__ import annotations

import orjson
import polars as pl
import pytest

from masivo_braze_sync.batch import DELETE, pack_delete, pack_track
from masivo_braze_sync.entities.base import OBJECT_SCHEMA


def objects(**counts: int) -> pl.DataFrame:
    rows = [
        {"key": f"{array}-{i}", "array": array, "body": orjson.dumps({"external_id": f"u{i}", "n": i})}
        for array, n in counts.items()
        for i in range(n)
    ]
    return pl.DataFrame(rows, schema=OBJECT_SCHEMA)


@pytest.mark.parametrize(("n", "requests"), [(1, 1), (75, 1), (76, 2), (150, 2), (151, 3)])
def test_one_array_uses_the_fewest_requests_of_75(n: int, requests: int) -> None:
    plans = pack_track(objects(events=n))
    assert len(plans) == requests
    bodies = [orjson.loads(p.body) for p in plans]
    assert all(len(b["events"]) <= 75 for b in bodies)
    sent = [e["n"] for b in bodies for e in b["events"]]
    assert sent == list(range(n))  # every object once, in order
    assert [k for p in plans for k in p.keys] == [f"events-{i}" for i in range(n)]


def test_per_array_mode_fills_each_array_to_75() -> None:
    plans = pack_track(objects(attributes=80, events=75, purchases=10))
    assert len(plans) == 2
    first = orjson.loads(plans[0].body)
    assert (len(first["attributes"]), len(first["events"]), len(first["purchases"])) == (75, 75, 10)
    assert list(first) == ["attributes", "events", "purchases"]
    assert orjson.loads(plans[1].body) == {"attributes": [{"external_id": f"u{i}", "n": i} for i in range(75, 80)]}


def test_combined_mode_caps_the_total_at_75() -> None:
    plans = pack_track(objects(attributes=50, events=50), combined=True)
    assert [p.object_count for p in plans] == [75, 25]
    assert all(sum(len(v) for v in orjson.loads(p.body).values()) <= 75 for p in plans)


def test_key_at_maps_braze_error_positions_back_to_keys() -> None:
    (plan,) = pack_track(objects(attributes=2, events=3))
    assert plan.key_at("events", 2) == "events-2"
    assert plan.key_at("attributes", 0) == "attributes-0"
    assert plan.key_at("events", 3) is None
    assert plan.key_at("purchases", 0) is None


def test_delete_requests_carry_at_most_50_ids() -> None:
    ids = [f"c{i}" for i in range(101)]
    plans = pack_delete(ids)
    assert [p.object_count for p in plans] == [50, 50, 1]
    assert all(p.endpoint == DELETE for p in plans)
    assert [i for p in plans for i in orjson.loads(p.body)["external_ids"]] == ids


def test_nothing_to_send_is_no_request() -> None:
    assert pack_track(objects()) == []


def _big(array: str, n: int, size: int) -> pl.DataFrame:
    pad = "x" * size
    rows = [{"key": f"{array}-{i}", "array": array, "body": orjson.dumps({"external_id": f"u{i}", "p": pad})}
            for i in range(n)]  # fmt: skip
    return pl.DataFrame(rows, schema=OBJECT_SCHEMA)


@pytest.mark.parametrize("combined", [False, True])
def test_requests_never_exceed_brazes_request_size(combined: bool) -> None:
    from masivo_braze_sync.braze.limits import BRAZE

    # 75 events of ~66 KB (256 properties of 255 characters) are ~5 MB: over Braze's 4 MB
    frame = pl.concat([_big("events", 75, 66_000), _big("attributes", 10, 66_000)])
    plans = pack_track(frame, combined=combined)
    assert all(len(p.body) <= BRAZE.request_bytes for p in plans)
    assert len(plans) == 2
    for array, n in (("events", 75), ("attributes", 10)):
        sent = [o["external_id"] for p in plans for o in orjson.loads(p.body).get(array, [])]
        assert sent == [f"u{i}" for i in range(n)]  # every object once, in order
    assert [len(p.body) for p in plans] == [len(_track(p)) for p in plans]


def _track(plan) -> bytes:
    return orjson.dumps(orjson.loads(plan.body))


def test_a_small_byte_limit_packs_by_size_as_well_as_count() -> None:
    plans = pack_track(_big("events", 10, 1000), max_bytes=3_500)
    assert [len(p.arrays["events"]) for p in plans] == [3, 3, 3, 1]
    assert all(len(p.body) <= 3_500 for p in plans)
