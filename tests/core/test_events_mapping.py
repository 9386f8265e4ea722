"""The events mapping: which rows go, which are skipped or rejected, and the objects built."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import polars as pl

from masivo_braze_sync.entities.base import AccountContext
from masivo_braze_sync.entities.events import EVENTS, INTERNAL_EVENT_TYPES

CTX = AccountContext("acct-1")
WHEN = datetime(2026, 11, 29, 12, 30, 5, 123000, tzinfo=UTC)


def frame(*rows: dict) -> pl.DataFrame:
    base = {
        "key": "e1",
        "present": True,
        "customer_id": "c1",
        "type": "VISIT",
        "properties": None,
        "occurred_at": WHEN,
        "customer_state": "active",
    }
    return pl.DataFrame([base | r for r in rows], schema_overrides={"occurred_at": pl.Datetime("us", "UTC")})


def test_a_plain_event_becomes_one_braze_event() -> None:
    ok = EVENTS.validate(frame({"properties": '{"store": {"id": 3}, "$src": "app"}'}), CTX)
    out = EVENTS.transform(ok.frame, CTX)
    assert out.frame["key"].to_list() == ["e1"]
    assert out.frame["array"].to_list() == ["events"]
    assert orjson.loads(out.frame["body"][0]) == {
        "external_id": "c1",
        "name": "VISIT",
        "time": "2026-11-29T12:30:05.123Z",
        "properties": {"store_id": 3, "src": "app"},
    }


def test_every_internal_event_type_is_skipped() -> None:
    rows = [{"key": f"e{i}", "type": t} for i, t in enumerate(sorted(INTERNAL_EVENT_TYPES))]
    out = EVENTS.validate(frame(*rows, {"key": "keep", "type": "REFERRAL"}), CTX)
    assert out.frame["key"].to_list() == ["keep"]
    assert out.skipped == {"internal event": len(INTERNAL_EVENT_TYPES)}
    assert out.rejected.is_empty()


def test_deleted_and_missing_customers_and_deleted_events() -> None:
    out = EVENTS.validate(
        frame(
            {"key": "gone", "customer_state": "deleted"},
            {"key": "unknown", "customer_state": "missing"},
            {
                "key": "vanished",
                "present": False,
                "customer_id": None,
                "type": None,
                "customer_state": "missing",
            },
        ),
        CTX,
    )
    assert out.frame.is_empty()
    assert out.skipped == {"customer deleted": 1, "event deleted before it was sent": 1}
    assert out.rejected.rows() == [("unknown", "validate", "customer not found")]


def test_ids_and_names_braze_would_refuse_are_rejected() -> None:
    out = EVENTS.validate(
        frame(
            {"key": "long-id", "customer_id": "é" * 494},  # 988 bytes
            {"key": "ok-id", "customer_id": "é" * 493},  # 986 bytes
            {"key": "no-name", "type": "$$"},
            {"key": "long-name", "type": "N" * 256},
        ),
        CTX,
    )
    assert out.frame["key"].to_list() == ["ok-id"]
    reasons = dict(zip(out.rejected["key"], out.rejected["reason"], strict=True))
    assert reasons == {
        "long-id": "customer id is longer than 987 bytes",
        "no-name": "event type is empty",
        "long-name": "event type is longer than 255 characters",
    }


def test_unfixable_properties_reject_only_that_row() -> None:
    ok = EVENTS.validate(
        frame(
            {"key": "bad", "properties": '{"note": "' + "x" * 300 + '"}'},
            {"key": "list", "properties": "[1, 2]"},
            {"key": "good", "properties": '{"n": 1}'},
        ),
        CTX,
    )
    out = EVENTS.transform(ok.frame, CTX)
    assert out.frame["key"].to_list() == ["good"]
    assert sorted(out.rejected["key"].to_list()) == ["bad", "list"]
    assert all(out.rejected["stage"] == "transform")
    # reasons name the property, never its value
    assert all("xxx" not in r for r in out.rejected["reason"])
