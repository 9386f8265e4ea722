"""The events pipeline end to end: real Postgres, the emulator over loopback HTTP, no Prefect."""

from __future__ import annotations

from collections import Counter

import pytest

from masivo_braze_sync.errors import AuthenticationError, ConfigurationError, EndpointNotAllowed
from tests.capture_helpers import settle


def test_events_are_delivered_once_and_a_second_run_sends_nothing(
    make_account, add_events, run_sync, emulator, received
) -> None:
    make_account("acct-1", customers=3)
    ids = add_events("acct-1", 200, customer="c2", properties={"cart": {"items": [{"sku": "A"}]}})

    first = run_sync("acct-1")
    assert (first.rows_read, first.objects_sent, first.requests, first.rejected) == (200, 200, 3, 0)
    assert sorted(received("acct-1")) == sorted(ids)
    event = emulator.profile("acct-1", "c2").events[0]
    assert event["name"] == "VISIT"
    assert event["properties"]["cart_items_0_sku"] == "A"

    requests_before = emulator.stats("acct-1").requests
    second = run_sync("acct-1")
    assert (second.rows_read, second.requests) == (0, 0)
    assert emulator.stats("acct-1").requests == requests_before


def test_internal_events_and_deleted_customers_are_never_sent(make_account, add_events, run_sync, received, db) -> None:
    make_account("acct-1", customers=3)
    add_events("acct-1", 3, type="REDEEM_COUPON")
    add_events("acct-1", 2, type="TIER_ADJUSTMENT")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now() WHERE id = 'c2'")
        conn.execute("DELETE FROM customers WHERE id = 'c3'")
    add_events("acct-1", 4, customer="c2")
    kept = add_events("acct-1", 5, customer="c1")

    summary = run_sync("acct-1")
    assert sorted(received("acct-1")) == sorted(kept)
    assert summary.skip_reasons == {"internal event": 5, "customer deleted": 4}


def test_an_event_for_an_unknown_customer_is_rejected_with_its_reason(make_account, add_events, run_sync, db) -> None:
    make_account("acct-1", customers=1)
    (orphan,) = add_events("acct-1", 1, customer="nobody")
    add_events("acct-1", 2, customer="c1")
    summary = run_sync("acct-1")
    assert (summary.objects_sent, summary.rejected) == (2, 1)
    with db.connection() as conn:
        rows = conn.execute("SELECT entity_key, stage, reason FROM braze_sync.rejected_rows").fetchall()
    assert rows == [(orphan, "validate", "customer not found")]


def test_a_row_that_cannot_be_made_valid_is_recorded_and_never_blocks_the_rest(
    make_account, add_events, run_sync, received, db
) -> None:
    make_account("acct-1", customers=1)
    good = add_events("acct-1", 10)
    (bad,) = add_events("acct-1", 1, properties={"a": {"b": 1}, "a_b": 2})
    (long,) = add_events("acct-1", 1, properties={"note": "x" * 300})
    summary = run_sync("acct-1")
    assert sorted(received("acct-1")) == sorted(good)
    assert summary.rejected == 2
    with db.connection() as conn:
        reasons = dict(conn.execute("SELECT entity_key, reason FROM braze_sync.rejected_rows").fetchall())
    assert reasons == {
        bad: "properties collide after flattening on key 'a_b'",
        long: "property 'note' is longer than 255 characters",
    }
    # rejected rows are not retried by the next run: the cursor moved past them
    assert run_sync("acct-1").rows_read == 0


def test_toggle_off_or_integration_disabled_is_not_an_error_and_sends_nothing(make_account, add_events) -> None:
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database

    make_account("acct-off", customers=1, sync_events=False)
    make_account("acct-disabled", customers=1, enabled=False)
    import os

    with Database(os.environ["MASIVO_DATABASE_URL"]).connection() as conn:
        accounts = {a.account_id: a for a in load_accounts(conn)}
    assert not accounts["acct-off"].is_on("sync_events")
    assert not accounts["acct-disabled"].is_on("sync_events")


def test_a_revoked_key_fails_with_an_error_naming_the_account_not_the_key(make_account, add_events, run_sync) -> None:
    make_account("acct-1", customers=1, api_key="revoked-secret-key")
    add_events("acct-1", 5)
    with pytest.raises(AuthenticationError) as info:
        run_sync("acct-1")
    assert "revoked-secret-key" not in str(info.value)
    assert "401" in str(info.value)


@pytest.mark.parametrize(
    "endpoint",
    ["https://rest.iad-01.braze.com.evil.example", "http://rest.iad-01.braze.com", "https://127.0.0.1:9"],
)
def test_an_endpoint_that_is_not_braze_is_refused_before_any_key_is_sent(
    make_account, add_events, run_sync, endpoint
) -> None:
    make_account("acct-1", customers=1, endpoint=endpoint)
    add_events("acct-1", 1)
    with pytest.raises(EndpointNotAllowed) as info:
        run_sync("acct-1")
    assert "acct-1" in str(info.value)


def test_an_incomplete_integration_is_a_configuration_error(make_account, run_sync) -> None:
    make_account("acct-1", api_key="")
    with pytest.raises(ConfigurationError, match="missing api_key"):
        run_sync("acct-1")


def test_the_account_limit_paces_requests_without_a_single_429(make_account, add_events, run_sync, emulator) -> None:
    # the workspace allows 10 requests per 1 s window; the account is configured to match
    make_account(
        "acct-1",
        customers=1,
        workspace={"rate_limit": 10, "rate_window_seconds": 1.0},
        track_rate_limit=10,
        track_rate_window_seconds=1.0,
    )
    add_events("acct-1", 75 * 25)
    summary = run_sync("acct-1")
    stats = emulator.stats("acct-1")
    assert summary.objects_sent == 75 * 25
    assert stats.rate_limited == 0
    assert stats.max_in_window <= 10
    assert summary.seconds >= 1.5  # 25 requests at 10 per second cannot finish sooner


def test_429s_from_a_busier_workspace_are_waited_out_and_nothing_is_lost(
    make_account, add_events, run_sync, emulator, received
) -> None:
    # Braze allows fewer requests than the account's setting (another producer shares the workspace)
    make_account("acct-1", customers=1, workspace={"rate_limit": 5, "rate_window_seconds": 1.0})
    ids = add_events("acct-1", 75 * 12)
    summary = run_sync("acct-1")
    assert summary.rate_limited > 0
    assert summary.rate_limited == emulator.stats("acct-1").rate_limited
    assert sorted(received("acct-1")) == sorted(ids)  # exactly once: a 429 is never applied
    assert summary.possibly_duplicated == 0


def test_server_errors_are_retried_and_lost_answers_are_counted_as_possible_duplicates(
    make_account, add_events, run_sync, emulator, received
) -> None:
    from masivo_braze_sync.emulator import Fault

    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 75 * 6)
    emulator.add_fault(Fault(kind="status", status=503, count=2, workspace="acct-1"))
    emulator.add_fault(Fault(kind="applied_then_500", count=1, workspace="acct-1"))
    summary = run_sync("acct-1")
    got = Counter(received("acct-1"))
    assert set(got) == set(ids)
    duplicated = [i for i, n in got.items() if n > 1]
    assert len(duplicated) == 75  # the one request whose answer was lost
    assert summary.possibly_duplicated >= 1
    assert summary.retries >= 3


# -- Braze fidelity (issue 13) --------------------------------------------------------------------


def test_internal_events_are_matched_on_the_name_braze_would_store(
    make_account, add_events, run_sync, received, db
) -> None:
    make_account("acct-1", customers=1)
    for kind in ("$FULFILL", "registration", "$$Expire", "Tier_Adjustment", "$redeem_coupon"):
        add_events("acct-1", 1, type=kind)
    kept = add_events("acct-1", 1, type="$VISIT")  # not internal: sent as `VISIT`
    settle(db)
    summary = run_sync("acct-1")
    assert summary.skip_reasons == {"internal event": 5}
    assert received("acct-1") == kept


def test_an_event_over_256_properties_is_sent_with_a_deterministic_256(
    make_account, add_events, run_sync, emulator, db
) -> None:
    make_account("acct-1", customers=1)
    cart = {"items": [{"sku": f"s{i}", "qty": i, "price": 1.5} for i in range(90)]}
    (eid,) = add_events("acct-1", 1, properties={"total": 135.0, "store": {"id": 3}, "cart": cart})
    settle(db)
    summary = run_sync("acct-1")
    assert (summary.objects_sent, summary.rejected) == (1, 0)
    assert summary.metrics.get("field_notes") == 1
    props = emulator.profile("acct-1", "c1").events[0]["properties"]
    assert len(props) == 256
    # shallow values first (they describe the event), then the list in order until the limit
    assert props["eid"] == eid
    assert props["total"] == 135.0
    assert props["store_id"] == 3
    assert props["cart_items_0_sku"] == "s0"
    assert props["cart_items_83_price"] == 1.5
    # jsonb orders an object's keys by length, then bytes: qty, sku, price
    assert "cart_items_84_qty" in props
    assert "cart_items_84_sku" not in props
    assert not any(k.startswith("cart_items_89") for k in props)
    with db.connection() as conn:
        rows = conn.execute("SELECT entity_key, stage, reason FROM braze_sync.rejected_rows").fetchall()
    assert len(rows) == 1
    assert rows[0][:2] == (eid, "field")
    assert "273 properties" in rows[0][2]
    assert "256" in rows[0][2]


def test_null_properties_are_not_sent(make_account, add_events, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=1)
    add_events("acct-1", 1, properties={"coupon": None, "store": {"id": None, "city": "Cali"}, "tags": [None, "a"]})
    settle(db)
    summary = run_sync("acct-1")
    assert (summary.objects_sent, summary.rejected) == (1, 0)
    props = emulator.profile("acct-1", "c1").events[0]["properties"]
    assert props == {"eid": props["eid"], "store_city": "Cali", "tags_1": "a"}
