"""Faults at Braze over repeated syncs of events AND customers: nothing is lost, duplicates happen
only where an answer was lost, and every possible duplicate is counted in a run summary.

Single faults are covered in tests/pipeline/test_events_sync.py; here storms of every kind hit one
workspace round after round, new data arriving between rounds, with runs that give up half-way
and are resumed by the next one.
"""

from __future__ import annotations

import pytest

from masivo_braze_sync.emulator import Fault
from masivo_braze_sync.errors import SyncError
from tests.reliability.helpers import assert_consistent, duplicated, ledger_rows

pytestmark = pytest.mark.slow

ACCOUNT = "storm"
CUSTOMERS = 60

#: (what it models, faults, concurrency for that round). A round's faults are cleared after it.
STORMS = [
    ("burst of 5xx", [Fault("status", status=503, count=6)], 4),
    ("429 storm", [Fault("rate_limit", count=10)], 4),
    ("timeouts", [Fault("timeout", count=3, delay_seconds=2.5)], 4),
    ("connection resets", [Fault("reset", count=5)], 4),
    ("answers lost", [Fault("applied_then_500", count=3)], 4),
    # in one batch, a request lands with its answer lost and its retry succeeds while another
    # keeps failing until the run gives up (customers: the upsert goes to /users/track, the
    # deletes to /users/delete); the next run resumes the batch
    (
        "answer lost, then the run gives up",
        [Fault("applied_then_500", path="/users/track"), Fault("status", count=4, path="/users/delete")],
        1,
    ),
    ("a lost answer in a run that gives up", [Fault("applied_then_500"), Fault("status", count=100)], 4),
    ("everything, at random", [Fault(k, probability=0.08) for k in ("status", "reset", "applied_then_500")], 4),
]


def _run(run_sync, entity: str) -> bool:
    try:
        run_sync(ACCOUNT, entity)
    except SyncError:
        return False
    return True


def test_fault_storms_over_repeated_syncs_lose_nothing_and_count_every_possible_duplicate(
    make_account, add_events, run_sync, emulator, received, db, settings_env
) -> None:
    settings_env(BRAZE_TIMEOUT_SECONDS=1.0, BRAZE_MAX_RETRIES=3)
    make_account(ACCOUNT, customers=CUSTOMERS, workspace={"rate_window_seconds": 1.0})
    events: list[str] = []
    outcomes: dict[str, list[bool]] = {"events": [], "customers": []}
    hit_events: list[int] = []  # faults that hit the events run, per round

    for n, (_, faults, concurrency) in enumerate(STORMS):
        settings_env(BRAZE_CONCURRENCY=concurrency)
        events += add_events(ACCOUNT, 450, customer=f"c{n + 1}")
        with db.connection() as conn:
            conn.execute(
                "UPDATE customers SET first_name = %s, phone = %s WHERE account_id = %s "
                "AND substr(id, 2)::int %% 3 = %s",
                (f"round {n}", f"+5730055501{n:02d}", ACCOUNT, n % 3),
            )
            if n == 5:  # deletes go to /users/delete, through the same storm
                conn.execute(
                    "UPDATE customers SET deleted_at = now() WHERE account_id = %s AND id IN ('c51', 'c52')", (ACCOUNT,)
                )
        # customers first, as `sync all` and live mode run them. Events never overtake profiles
        # (docs/live.md#profile-before-event): after a customers run that gave up, a fault-free one
        # resumes it, so that the events run meets the storm with this round's events to send
        for entity in ("customers", "events"):
            for fault in faults:
                emulator.add_fault(Fault(**{**_fields(fault), "workspace": ACCOUNT}))
            before = sum(emulator.stats(ACCOUNT).faults_injected.values())
            outcomes[entity].append(_run(run_sync, entity))
            if entity == "events":
                hit_events.append(sum(emulator.stats(ACCOUNT).faults_injected.values()) - before)
            emulator.clear_faults()
            if entity == "customers" and not outcomes[entity][-1]:
                assert _run(run_sync, entity), "customers: a fault-free run did not resume the batch"

    # the storms are over: the next runs finish whatever the failed ones left
    settings_env(BRAZE_CONCURRENCY=4)
    for entity in ("customers", "events"):
        assert _run(run_sync, entity), f"{entity}: the first run after the storms failed"
        assert run_sync(ACCOUNT, entity).rows_read == 0

    # every storm not left to chance hit the events of its round (no events run found nothing to send)
    assert all(hits for hits, (_, faults, _) in zip(hit_events, STORMS, strict=True) if faults[0].probability is None)
    # runs did fail along the way (so resumption was exercised), and others got through storms
    assert not all(outcomes["events"])
    assert any(outcomes["events"])
    stats = emulator.stats(ACCOUNT)
    assert {"status", "rate_limit", "timeout", "reset", "applied_then_500"} <= set(stats.faults_injected)

    # events: every one arrived; each extra copy is inside a request the ledger flags, and there
    # are no more copies than requests that landed with their answer lost
    got = received(ACCOUNT)
    assert set(got) == set(events)
    extra = duplicated(got)
    rows = ledger_rows(db, ACCOUNT, "events")
    flagged_keys = {k for _, keys, dup in rows if dup for k in keys}
    assert set(extra) <= flagged_keys
    assert sum(extra.values()) <= 75 * stats.faults_injected["applied_then_500"]
    assert extra, "no answer was lost on an events request: the storm did not test duplicates"

    # every request the ledger flags as possibly sent twice is counted in a run summary
    with db.connection() as conn:
        counted = dict(
            conn.execute(
                "SELECT consumer, sum(possibly_duplicated) FROM braze_sync.run_summaries "
                "WHERE account_id = %s GROUP BY consumer",
                (ACCOUNT,),
            ).fetchall()
        )
    assert counted["events"] >= sum(dup for _, _, dup in rows) >= 1
    customer_rows = ledger_rows(db, ACCOUNT, "customers")
    assert counted["customers"] >= sum(dup for _, _, dup in customer_rows)

    # customers: Braze holds exactly Masivo's latest values; the deleted ones are gone
    with db.connection() as conn:
        source = conn.execute(
            "SELECT id, email, first_name, phone, deleted_at IS NOT NULL FROM customers WHERE account_id = %s",
            (ACCOUNT,),
        ).fetchall()
    profiles = emulator.profiles(ACCOUNT)
    for cid, email, first_name, phone, deleted in source:
        if deleted:
            assert cid not in profiles
            assert cid in emulator.deleted_ids(ACCOUNT)
            continue
        attrs = profiles[cid].attributes
        assert (attrs.get("email"), attrs.get("first_name"), attrs.get("phone")) == (email, first_name, phone)

    for consumer in ("events", "customers"):
        assert_consistent(db, ACCOUNT, consumer)


def _fields(fault: Fault) -> dict:
    return {name: getattr(fault, name) for name in Fault.__dataclass_fields__}
