"""Customers end to end: profiles, changed fields only, deletes, tags, toggles, bad values."""

from __future__ import annotations

import orjson
import pytest
from psycopg.types.json import Jsonb

from tests.capture_helpers import settle


@pytest.fixture
def customer(db):
    """Insert or update one customer: `customer("acct-1", "c1", email=..., tags={...})`."""

    def upsert(account_id: str, customer_id: str, **columns) -> None:
        columns = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in columns.items()}
        with db.connection() as conn:
            exists = conn.execute(
                "SELECT 1 FROM customers WHERE account_id = %s AND id = %s", (account_id, customer_id)
            ).fetchone()
            if exists and columns:
                sets = ", ".join(f"{c} = %s" for c in columns)
                conn.execute(
                    f"UPDATE customers SET {sets} WHERE account_id = %s AND id = %s",
                    (*columns.values(), account_id, customer_id),
                )
            elif not exists:
                cols = ["account_id", "id", *columns]
                conn.execute(
                    f"INSERT INTO customers ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    (account_id, customer_id, *columns.values()),
                )

    return upsert


def attrs(emulator, customer_id: str, workspace: str = "acct-1") -> dict:
    profile = emulator.profile(workspace, customer_id)
    return profile.attributes if profile else None


def test_every_field_is_mapped_to_braze_names_and_formats(make_account, customer, run_sync, emulator) -> None:
    make_account("acct-1")
    customer(
        "acct-1",
        "c1",
        email=" ana@example.com ",
        phone="300 123 4567",
        first_name="Ana",
        last_name="Pérez",
        gender="FEMALE",
        dob="1990-04-01",
        country="co",
        language="es-CO",
        city="Medellín",
        status="ACTIVE",
        tier="GOLD",
        points=1250,
        attributes={"favourite": {"store": "Centro"}, "email": "shadow@x.y", "vip": True},
        tags={"newsletter": True, "segment": "A"},
    )
    summary = run_sync("acct-1", "customers")
    assert summary.objects_sent == 1
    assert attrs(emulator, "c1") == {
        "email": "ana@example.com",
        "phone": "+573001234567",
        "first_name": "Ana",
        "last_name": "Pérez",
        "gender": "F",
        "dob": "1990-04-01",
        "country": "CO",
        "language": "es",
        "home_city": "Medellín",
        "masivo_status": "ACTIVE",
        "masivo_tier": "GOLD",
        "masivo_points": 1250,
        "favourite_store": "Centro",
        "attr_email": "shadow@x.y",
        "vip": True,
        "masivo_tag_newsletter": True,
        "masivo_tag_segment": "A",
    }


@pytest.mark.parametrize(("masivo", "braze"), [("MALE", "M"), ("FEMALE", "F"), ("OTHER", "O"), (None, None)])
def test_gender(make_account, customer, run_sync, emulator, masivo, braze) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", gender=masivo, email="a@b.co")
    run_sync("acct-1", "customers")
    assert attrs(emulator, "c1").get("gender") == braze


def test_a_touched_row_that_did_not_change_sends_nothing_and_one_change_sends_one_attribute(
    make_account, customer, run_sync, emulator, db
) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com", first_name="Ana", tier="GOLD", tags={"x": 1})
    first = run_sync("acct-1", "customers")
    requests = emulator.stats("acct-1").requests
    data_points = emulator.stats("acct-1").data_points

    with db.connection() as conn:
        conn.execute("UPDATE customers SET email = email, updated_at = now()")
    touched = run_sync("acct-1", "customers")
    assert (touched.rows_read, touched.requests) == (1, 0)
    assert emulator.stats("acct-1").requests == requests

    customer("acct-1", "c1", email="new@example.com")
    changed = run_sync("acct-1", "customers")
    assert changed.requests == 1
    assert emulator.stats("acct-1").data_points - data_points == 1  # one billed data point
    assert changed.metrics["attributes_sent"] == 1
    assert changed.metrics["attributes_full_resend"] == first.metrics["attributes_full_resend"]
    assert attrs(emulator, "c1")["email"] == "new@example.com"

    assert run_sync("acct-1", "customers").requests == 0  # nothing new: nothing sent


def test_a_field_that_becomes_null_is_sent_as_null(make_account, customer, run_sync, emulator) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com", tier="GOLD", attributes={"color": "red"})
    run_sync("acct-1", "customers")
    customer("acct-1", "c1", tier=None, attributes={})
    summary = run_sync("acct-1", "customers")
    assert summary.metrics["attributes_sent"] == 2
    assert attrs(emulator, "c1") == {"email": "a@example.com"}


def test_tags_added_changed_and_removed(make_account, customer, run_sync, emulator) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com", tags={"vip": True, "segment": "A"})
    run_sync("acct-1", "customers")
    customer("acct-1", "c1", tags={"segment": "B", "score": 7})
    summary = run_sync("acct-1", "customers")
    assert summary.metrics["attributes_sent"] == 3  # segment changed, score added, vip removed
    got = attrs(emulator, "c1")
    assert {k: v for k, v in got.items() if k.startswith("masivo_tag_")} == {
        "masivo_tag_segment": "B",
        "masivo_tag_score": 7,
    }


def test_tags_toggle_off_sends_no_tags_and_forgets_nothing(make_account, customer, run_sync, emulator, db) -> None:
    make_account("acct-1", sync_customer_tags=False)
    customer("acct-1", "c1", email="a@example.com", tags={"vip": True})
    run_sync("acct-1", "customers")
    assert attrs(emulator, "c1") == {"email": "a@example.com"}
    with db.connection() as conn:
        conn.execute("UPDATE braze_integrations SET sync_customer_tags = true")
    customer("acct-1", "c1", tags={"vip": True, "new": "x"})
    run_sync("acct-1", "customers")
    assert attrs(emulator, "c1") == {"email": "a@example.com", "masivo_tag_vip": True, "masivo_tag_new": "x"}


def test_create_toggle_off(make_account, customer, run_sync, emulator) -> None:
    make_account("acct-1", sync_customers_create=False)
    customer("acct-1", "c1", email="a@example.com")
    summary = run_sync("acct-1", "customers")
    assert summary.skip_reasons == {"create toggle off": 1}
    assert emulator.profiles("acct-1") == {}


def test_update_toggle_off(make_account, customer, run_sync, emulator, db) -> None:
    make_account("acct-1", sync_customers_update=False)
    customer("acct-1", "c1", email="a@example.com")
    run_sync("acct-1", "customers")
    customer("acct-1", "c1", email="b@example.com")
    summary = run_sync("acct-1", "customers")
    assert summary.skip_reasons == {"update toggle off": 1}
    assert attrs(emulator, "c1") == {"email": "a@example.com"}


def test_delete_toggle_off(make_account, customer, run_sync, emulator, db) -> None:
    make_account("acct-1", sync_customers_delete=False)
    customer("acct-1", "c1", email="a@example.com")
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now()")
    summary = run_sync("acct-1", "customers")
    assert summary.skip_reasons == {"delete toggle off": 1}
    assert emulator.deleted_ids("acct-1") == []


@pytest.mark.parametrize("how", ["soft", "hard"])
def test_a_delete_followed_by_pending_events_sends_the_delete_and_no_event(
    make_account, customer, add_events, run_sync, emulator, db, how
) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com")
    run_sync("acct-1", "customers")
    add_events("acct-1", 3, customer="c1")
    with db.connection() as conn:
        if how == "soft":
            conn.execute("UPDATE customers SET deleted_at = now() WHERE id = 'c1'")
        else:
            conn.execute("DELETE FROM customers WHERE id = 'c1'")
    deleted = run_sync("acct-1", "customers")
    events = run_sync("acct-1", "events")
    assert deleted.requests == 1
    assert emulator.deleted_ids("acct-1") == ["c1"]
    assert emulator.profile("acct-1", "c1") is None  # never re-created
    assert events.objects_sent == 0
    assert events.skipped + events.rejected == 3


def test_a_customer_deleted_in_the_same_batch_as_its_creation_is_never_sent(
    make_account, customer, run_sync, emulator, db
) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com")
    customer("acct-1", "c2", email="b@example.com")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now() WHERE id = 'c1'")
    summary = run_sync("acct-1", "customers")
    assert summary.skip_reasons == {"deleted before it was ever sent": 1}
    assert set(emulator.profiles("acct-1")) == {"c2"}
    assert emulator.deleted_ids("acct-1") == []


def test_deletes_go_50_ids_per_request(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=120)
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now()")
    summary = run_sync("acct-1", "customers")
    assert summary.requests == 3
    assert emulator.stats("acct-1").requests_by_path["/users/delete"] == 3
    assert sorted(emulator.deleted_ids("acct-1")) == sorted(f"c{i}" for i in range(1, 121))


def test_a_deleted_customer_who_comes_back_is_created_again(make_account, customer, run_sync, emulator, db) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com", tier="GOLD")
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now()")
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = NULL")
    run_sync("acct-1", "customers")
    assert attrs(emulator, "c1") == {"email": "a@example.com", "masivo_tier": "GOLD"}


def test_bad_values_drop_only_their_field_with_a_recorded_reason(
    make_account, customer, run_sync, emulator, db
) -> None:
    make_account("acct-1")
    customer(
        "acct-1",
        "c1",
        email="not-an-email",
        first_name="x" * 300,
        last_name="Ok",
        dob="2999-01-01",
        country="Narnia",
        gender="ROBOT",
        language="klingon",
        attributes={"note": "y" * 300, "fine": 1},
        tags={"nested": {"a": 1}},
    )
    summary = run_sync("acct-1", "customers")
    assert summary.objects_sent == 1
    assert summary.rejected == 0  # the profile went; its bad fields are recorded, not the row
    assert attrs(emulator, "c1") == {"last_name": "Ok", "fine": 1}
    with db.connection() as conn:
        reasons = sorted(
            r for (r,) in conn.execute("SELECT reason FROM braze_sync.rejected_rows WHERE stage = 'field'")
        )
    assert reasons == sorted(
        [
            "field email dropped: not a valid email address",
            "field first_name dropped: longer than 255 characters",
            "field dob dropped: in the future",
            "field country dropped: not an ISO 3166-1 alpha-2 code",
            "field gender dropped: not MALE, FEMALE or OTHER",
            "field language dropped: not an ISO 639-1 language code",
            "custom attribute dropped: property 'note' is longer than 255 characters",
            "field masivo_tag_nested dropped: not a string, number or boolean",
        ]
    )
    assert all("y" * 20 not in r and "not-an-email" not in r for r in reasons)

    # fixing a dropped field sends it; the valid fields are not sent again
    customer("acct-1", "c1", email="fixed@example.com")
    fixed = run_sync("acct-1", "customers")
    assert fixed.metrics["attributes_sent"] == 1
    assert attrs(emulator, "c1")["email"] == "fixed@example.com"


def test_a_crash_before_commit_resends_the_batch_and_remembers_what_was_sent(
    make_account, customer, run_sync, emulator, db
) -> None:
    import asyncio
    import os

    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import CUSTOMERS
    from masivo_braze_sync.pipeline import AccountRun

    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com")
    database = Database(os.environ["MASIVO_DATABASE_URL"])
    with database.connection() as conn:
        (account,) = load_accounts(conn, ["acct-1"])

    async def deliver_without_commit() -> None:
        async with AccountRun(database, CUSTOMERS, account) as run:
            batch = run.next_batch()
            await run.deliver(batch, run.transform(run.validate(run.extract(batch))))

    asyncio.run(deliver_without_commit())
    customer("acct-1", "c1", email="b@example.com")  # changes after the crash
    run_sync("acct-1", "customers")  # resumes the open batch, then the next one
    assert attrs(emulator, "c1")["email"] == "b@example.com"
    with db.connection() as conn:
        (hashes,) = conn.execute("SELECT field_hashes FROM braze_sync.customer_state").fetchone()
    from masivo_braze_sync.entities.customers import value_hash

    assert hashes["email"] == value_hash("b@example.com")
    assert orjson.dumps(hashes)


# -- Braze fidelity (issue 13) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        # control keys of the attributes object, and fields Braze reads as identifiers or aliases
        "_update_existing_only",
        "push_token_import",
        "_merge_objects",
        "alias_name",
        "alias_label",
        "external_id",
        "braze_id",
        "user_alias",
        "image_url",
        "_anything_underscored",  # Braze's control keys start with `_`: assumed reserved
    ],
)
def test_a_custom_attribute_named_like_a_braze_control_key_is_prefixed(
    make_account, customer, run_sync, emulator, db, name
) -> None:
    make_account("acct-1")
    customer("acct-1", "c1", email="a@example.com", attributes={name: "yes", "color": "red"})
    settle(db)
    summary = run_sync("acct-1", "customers")
    assert (summary.objects_sent, summary.rejected) == (1, 0)
    got = attrs(emulator, "c1")
    assert got["attr_" + name] == "yes"
    assert got["color"] == "red"
    assert name not in got


def test_an_array_of_scalars_is_an_array_attribute_and_objects_still_flatten(
    make_account, customer, run_sync, emulator, db
) -> None:
    make_account("acct-1")
    many = [f"v{i}" for i in range(30)]
    customer(
        "acct-1",
        "c1",
        email="a@example.com",
        attributes={"hobbies": ["golf", "wine", "golf", None], "visits": [{"city": "Cali"}], "many": many},
    )
    settle(db)
    summary = run_sync("acct-1", "customers")
    assert (summary.objects_sent, summary.rejected) == (1, 0)
    got = attrs(emulator, "c1")
    assert got["hobbies"] == ["golf", "wine"]  # Braze keeps unique values; nulls are not values
    assert got["visits_0_city"] == "Cali"
    assert got["many"] == many[:25]  # Braze's default array length, the first values kept
    assert "hobbies_0" not in got
    assert "many_0" not in got
    assert summary.metrics["arrays_truncated"] == 1
    with db.connection() as conn:
        rows = conn.execute("SELECT entity_key, stage, reason FROM braze_sync.rejected_rows").fetchall()
    assert rows == [("c1", "field", "field many truncated: 30 values, Braze keeps 25")]

    # the array changes: the whole array is sent again, and a value longer than 255 drops the field
    customer("acct-1", "c1", attributes={"hobbies": ["wine"], "visits": [{"city": "Cali"}], "many": ["x" * 256]})
    settle(db)
    run_sync("acct-1", "customers")
    got = attrs(emulator, "c1")
    assert got["hobbies"] == ["wine"]
    assert got["many"] == many[:25]


def test_create_off_never_creates_a_profile_from_any_entity(make_account, customer, run_sync, emulator, db) -> None:
    from psycopg.types.json import Jsonb

    make_account("acct-1")
    customer("acct-1", "known", email="k@example.com", tags={"vip": True})
    settle(db)
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute("UPDATE braze_integrations SET sync_customers_create = false")
    customer("acct-1", "new", email="n@example.com", tags={"vip": True})
    customer("acct-1", "known", tags={"vip": False})
    with db.connection() as conn:
        for c in ("known", "new"):
            conn.execute(
                "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                "VALUES (%s, 'acct-1', %s, 'VISIT', %s, now())",
                (f"e-{c}", c, Jsonb({})),
            )
            conn.execute(
                "INSERT INTO orders (account_id, id, customer_id, status, fulfilled_at) "
                "VALUES ('acct-1', %s, %s, 'FULFILLED', now())",
                (f"o-{c}", c),
            )
            conn.execute(
                "INSERT INTO order_items (account_id, order_id, line_no, sku, quantity, unit_price) "
                "VALUES ('acct-1', %s, 1, 'sku', 1, 10)",
                (f"o-{c}",),
            )
        conn.execute("INSERT INTO audiences (account_id, id, name) VALUES ('acct-1', 'a1', 'VIP')")
        conn.execute(
            "INSERT INTO audience_members (account_id, audience_id, customer_id) "
            "VALUES ('acct-1', 'a1', 'known'), ('acct-1', 'a1', 'new')"
        )
    settle(db)
    for entity in ("customers", "events", "purchases", "audiences"):
        assert run_sync("acct-1", entity).rejected == 0
    assert emulator.profile("acct-1", "new") is None  # no object created it
    known = emulator.profile("acct-1", "known")
    assert known.attributes["masivo_tag_vip"] is False
    assert known.attributes["masivo_VIP"] is True
    assert len(known.events) == 1
    assert len(known.purchases) == 1
