"""The audiences pipeline end to end: real Postgres, the emulator over loopback HTTP, no Prefect.

Outcomes are asserted on the emulator's stored profiles: `masivo_<name>` present (true) or absent
(never set, or removed by a null).
"""

from __future__ import annotations

import time

import pytest

from masivo_braze_sync.entities.audiences import NAME_TOO_LONG, attribute_key

VIP = "masivo_VIP Customers"


def _sql(db, *statements: tuple[str, tuple] | str) -> None:
    """Run statements in one transaction."""
    with db.connection() as conn:
        for st in statements:
            sql, params = (st, ()) if isinstance(st, str) else st
            conn.execute(sql, params)


def _audience(db, audience_id: str, name: str, members: list[str] | range, account: str = "acct-1") -> None:
    _sql(db, ("INSERT INTO audiences (account_id, id, name) VALUES (%s, %s, %s)", (account, audience_id, name)))
    _join(db, audience_id, members, account)


def _join(db, audience_id: str, members, account: str = "acct-1") -> None:
    ids = [m if isinstance(m, str) else f"c{m}" for m in members]
    _sql(
        db,
        (
            "INSERT INTO audience_members (account_id, audience_id, customer_id) SELECT %s, %s, unnest(%s::text[])",
            (account, audience_id, ids),
        ),
    )


def _leave(db, audience_id: str, *customers: str) -> None:
    _sql(
        db,
        (
            "DELETE FROM audience_members WHERE audience_id = %s AND customer_id = ANY(%s)",
            (audience_id, list(customers)),
        ),
    )


def _attrs(emulator, customer: str, ws: str = "acct-1") -> dict | None:
    p = emulator.profile(ws, customer)
    return None if p is None else {k: v for k, v in p.attributes.items() if k.startswith("masivo_")}


# -- the key rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("VIP Customers", "masivo_VIP Customers"),
        ("$gold.members  (2024) ñandú 🎉 金", "masivo_$gold.members  (2024) ñandú 🎉 金"),
        ("tab\there\nnew\rline\x7fdel\x85nel\u2028ls\u2029ps", "masivo_tab_here_new_line_del_nel_ls_ps"),
        ("x" * 248, "masivo_" + "x" * 248),
        ("x" * 249, None),
    ],
)
def test_the_key_is_the_name_as_written_with_only_refused_characters_replaced(name, key) -> None:
    assert attribute_key(name) == key
    if key is not None:
        assert len(key) <= 255
        assert not key.startswith("$")


# -- membership -----------------------------------------------------------------------------------


def test_join_leave_rejoin(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=3)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])

    first = run_sync("acct-1", "audiences")
    assert (first.rows_read, first.objects_sent, first.requests, first.rejected) == (2, 2, 1, 0)
    assert _attrs(emulator, "c1") == _attrs(emulator, "c2") == {VIP: True}
    assert emulator.profile("acct-1", "c3") is None
    assert run_sync("acct-1", "audiences").requests == 0  # nothing new

    _leave(db, "vip", "c1")
    left = run_sync("acct-1", "audiences")
    assert (left.objects_sent, left.metrics) == (1, {"attributes_set": 0, "attributes_nulled": 1})
    assert _attrs(emulator, "c1") == {}
    assert _attrs(emulator, "c2") == {VIP: True}

    _join(db, "vip", ["c1"])
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == _attrs(emulator, "c2") == {VIP: True}


def test_a_join_undone_before_the_sync_never_creates_a_profile(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    _leave(db, "vip", "c2")
    summary = run_sync("acct-1", "audiences")
    assert summary.objects_sent == 2  # c1: true; c2: an update-only null
    assert _attrs(emulator, "c1") == {VIP: True}
    assert emulator.profile("acct-1", "c2") is None


def test_one_object_per_customer_carries_all_of_its_audiences(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    _audience(db, "new", "New in 2024", ["c1"])
    summary = run_sync("acct-1", "audiences")
    assert (summary.rows_read, summary.objects_sent) == (3, 2)
    assert _attrs(emulator, "c1") == {VIP: True, "masivo_New in 2024": True}


# -- deleting and renaming audiences --------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["members then audience", "audience then members", "hard delete, members left behind", "soft delete"],
)
def test_deleting_an_audience_nulls_the_attribute_for_every_member(make_account, run_sync, emulator, db, how) -> None:
    make_account("acct-1", customers=4)
    _audience(db, "vip", "VIP Customers", ["c1", "c2", "c3"])
    _audience(db, "other", "Other", ["c1", "c4"])
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c3") == {VIP: True}

    members = "DELETE FROM audience_members WHERE audience_id = 'vip'"
    hard = "DELETE FROM audiences WHERE id = 'vip'"
    soft = "UPDATE audiences SET deleted_at = now() WHERE id = 'vip'"
    _sql(
        db,
        *{
            "members then audience": (members, hard),
            "audience then members": (hard, members),
            "hard delete, members left behind": (hard,),
            "soft delete": (soft,),
        }[how],
    )
    summary = run_sync("acct-1", "audiences")
    assert summary.objects_sent == 3
    assert summary.metrics["attributes_set"] == 0
    assert _attrs(emulator, "c1") == {"masivo_Other": True}
    assert _attrs(emulator, "c2") == _attrs(emulator, "c3") == {}
    assert _attrs(emulator, "c4") == {"masivo_Other": True}
    assert run_sync("acct-1", "audiences").objects_sent == 0


def test_undeleting_an_audience_sets_the_attribute_again(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    _sql(db, "UPDATE audiences SET deleted_at = now() WHERE id = 'vip'")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") is None  # deleted before its first sync: never set
    _sql(db, "UPDATE audiences SET deleted_at = NULL WHERE id = 'vip'")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == _attrs(emulator, "c2") == {VIP: True}


def test_renaming_moves_the_attribute_for_every_member(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=4)
    _audience(db, "vip", "VIP Customers", ["c1", "c2", "c3"])
    run_sync("acct-1", "audiences")

    _leave(db, "vip", "c3")  # left before the rename, synced after it
    _sql(db, "UPDATE audiences SET name = 'Gold Club' WHERE id = 'vip'")
    _join(db, "vip", ["c4"])  # joined after the rename
    summary = run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == _attrs(emulator, "c2") == {"masivo_Gold Club": True}
    assert _attrs(emulator, "c3") == {}
    assert _attrs(emulator, "c4") == {"masivo_Gold Club": True}
    assert summary.objects_sent == 4

    # two renames in a row, and a touch that changes nothing
    _sql(db, "UPDATE audiences SET name = 'Tmp' WHERE id = 'vip'", "UPDATE audiences SET name = 'Platinum'")
    _sql(db, "UPDATE audiences SET updated_at = now()")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == {"masivo_Platinum": True}


def test_audiences_with_the_same_name_share_the_attribute(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "a", "VIP Customers", ["c1", "c2"])
    _audience(db, "b", "VIP Customers", ["c1"])
    run_sync("acct-1", "audiences")
    _leave(db, "a", "c1", "c2")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == {VIP: True}  # still a member of "b"
    assert _attrs(emulator, "c2") == {}
    _sql(db, "DELETE FROM audiences WHERE id = 'b'")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == {}


# -- rules ----------------------------------------------------------------------------------------


def test_membership_of_deleted_customers_is_never_sent(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=3)
    _sql(db, "UPDATE customers SET deleted_at = now() WHERE id = 'c2'", "DELETE FROM customers WHERE id = 'c3'")
    _audience(db, "vip", "VIP Customers", ["c1", "c2", "c3"])
    summary = run_sync("acct-1", "audiences")
    assert summary.skip_reasons == {"customer deleted": 1, "customer not found": 1}
    assert _attrs(emulator, "c1") == {VIP: True}
    assert emulator.profile("acct-1", "c2") is None
    assert emulator.profile("acct-1", "c3") is None

    # nor a null when the audience goes: Braze would re-create the profile
    _sql(db, "DELETE FROM audiences WHERE id = 'vip'")
    summary = run_sync("acct-1", "audiences")
    assert summary.objects_sent == 1
    assert emulator.profile("acct-1", "c2") is None
    assert emulator.profile("acct-1", "c3") is None


def test_a_name_too_long_for_a_key_is_rejected_and_never_blocks_the_rest(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "long", "x" * 249, ["c1"])
    _audience(db, "vip", "VIP Customers", ["c2"])
    summary = run_sync("acct-1", "audiences")
    assert (summary.objects_sent, summary.rejected) == (1, 1)
    assert _attrs(emulator, "c2") == {VIP: True}
    with db.connection() as conn:
        rows = conn.execute("SELECT entity_key, stage, reason FROM braze_sync.rejected_rows").fetchall()
    assert rows == [('["long", "c1"]', "transform", NAME_TOO_LONG)]

    # renamed to something that fits: the attribute appears
    _sql(db, "UPDATE audiences SET name = 'Long' WHERE id = 'long'")
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c1") == {"masivo_Long": True}


def test_the_toggle_gates_the_audiences_sync(make_account) -> None:
    import os

    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import AUDIENCES, ENTITIES

    assert list(ENTITIES)[-1] == "audiences"
    make_account("on", customers=1)
    make_account("off", customers=1, sync_audiences=False)
    make_account("disabled", customers=1, enabled=False)
    with Database(os.environ["MASIVO_DATABASE_URL"]).connection() as conn:
        accounts = {a.account_id: a for a in load_accounts(conn)}
    assert AUDIENCES.is_enabled(accounts["on"])
    assert not AUDIENCES.is_enabled(accounts["off"])
    assert not AUDIENCES.is_enabled(accounts["disabled"])


def test_full_sync_and_retry_rejected_queue_memberships_again(make_account, run_sync, emulator, db) -> None:
    from masivo_braze_sync.entities import AUDIENCES, ENTITIES
    from masivo_braze_sync.requeue import full_resync, retry_rejected

    make_account("acct-1", customers=3)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    _audience(db, "long", "x" * 249, ["c3"])
    assert run_sync("acct-1", "audiences").rejected == 1
    emulator.reset()  # a new, empty workspace

    assert full_resync(db, AUDIENCES, "acct-1", resend=False) == 3
    summary = run_sync("acct-1", "audiences")
    assert (summary.objects_sent, summary.rejected) == (2, 1)
    assert _attrs(emulator, "c1") == _attrs(emulator, "c2") == {VIP: True}

    # an object Braze refused is keyed by customer id: retrying it re-sends that customer's memberships
    emulator.reset()
    _sql(
        db,
        "INSERT INTO braze_sync.rejected_rows (account_id, consumer, entity_key, stage, reason) "
        "VALUES ('acct-1', 'audiences', 'c1', 'braze', 'Braze refused the object')",
    )
    assert retry_rejected(db, ENTITIES, entity="audiences") == {("acct-1", "audiences"): 2}  # keys
    summary = run_sync("acct-1", "audiences")
    assert (summary.objects_sent, summary.rejected) == (1, 1)  # the long name is still too long
    assert _attrs(emulator, "c1") == {VIP: True}
    assert emulator.profile("acct-1", "c2") is None


# -- large audiences ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["hard delete with its members", "soft delete"])
def test_an_audience_of_10000_members_deleted_in_one_go(make_account, run_sync, emulator, db, monkeypatch, how) -> None:
    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BATCH_ROWS", "3000")  # several batches: memory is bounded by the batch
    get_settings.cache_clear()
    make_account("acct-1", customers=10_000)
    _audience(db, "big", "VIP Customers", range(1, 10_001))
    run_sync("acct-1", "audiences")
    assert _attrs(emulator, "c9999") == {VIP: True}
    before = emulator.stats("acct-1").requests

    if how == "soft delete":
        _sql(db, "UPDATE audiences SET deleted_at = now() WHERE id = 'big'")
    else:
        _sql(db, "DELETE FROM audience_members WHERE audience_id = 'big'", "DELETE FROM audiences WHERE id = 'big'")
    started = time.perf_counter()
    summary = run_sync("acct-1", "audiences")
    elapsed = time.perf_counter() - started
    assert (summary.rows_read, summary.objects_sent, summary.batches) == (10_000, 10_000, 4)
    assert summary.requests == 134 == emulator.stats("acct-1").requests - before  # 75 per request
    assert emulator.stats("acct-1").rate_limited == 0
    assert all(_attrs(emulator, f"c{i}") == {} for i in range(1, 10_001))
    assert elapsed < 15


# -- one owner per Braze key (issue 13) -----------------------------------------------------------


def test_an_audience_whose_key_a_customer_field_owns_is_refused_never_written(
    make_account, run_sync, emulator, db
) -> None:
    from masivo_braze_sync.entities.audiences import KEY_TAKEN
    from tests.capture_helpers import settle

    make_account("acct-1")
    _sql(
        db,
        "INSERT INTO customers (account_id, id, tier, tags) VALUES ('acct-1', 'c1', 'Gold', '{\"vip\": \"yes\"}')",
    )
    settle(db)
    run_sync("acct-1", "customers")
    for audience_id, name in (("a1", "tier"), ("a2", "tag_vip"), ("a3", "points"), ("a4", "Tier")):
        _audience(db, audience_id, name, ["c1"])
    settle(db)
    run_sync("acct-1", "customers")  # others read below the customers' horizon (profile first)
    summary = run_sync("acct-1", "audiences")
    assert summary.rejected == 3
    got = _attrs(emulator, "c1")
    assert got["masivo_tier"] == "Gold"
    assert got["masivo_tag_vip"] == "yes"
    assert "masivo_points" not in got
    assert got["masivo_Tier"] is True  # keys are case-sensitive: this one is the audience's
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT entity_key, stage, reason FROM braze_sync.rejected_rows ORDER BY entity_key"
        ).fetchall()
    assert rows == [(f'["{a}", "c1"]', "transform", KEY_TAKEN) for a in ("a1", "a2", "a3")]

    _leave(db, "a1", "c1")  # leaving never sends the null that would erase the customer's tier
    _leave(db, "a2", "c1")
    settle(db)
    run_sync("acct-1", "customers")
    run_sync("acct-1", "audiences")
    got = _attrs(emulator, "c1")
    assert got["masivo_tier"] == "Gold"
    assert got["masivo_tag_vip"] == "yes"
