"""No committed change is ever skipped, however long writers hold their transactions open.

Writers insert events inside transactions held open for random times (milliseconds to seconds),
some rolled back, while syncs run in a loop. An `updated_at` or id watermark would skip the rows
of a transaction that commits after a later one was read; the commit-safe change log must not.
"""

from __future__ import annotations

from collections import Counter

from tests.capture_helpers import Writers


def test_concurrent_writers_with_long_transactions_every_committed_event_arrives_exactly_once(
    make_account, run_sync, received, database_url
) -> None:
    make_account("acct-1", customers=5)
    writers = Writers(database_url, "acct-1").start()
    syncs = 0
    while writers.alive():
        run_sync("acct-1")
        syncs += 1
    writers.join()
    run_sync("acct-1")  # everything has committed now: the last run sees the rest

    got = Counter(received("acct-1"))
    assert syncs >= 3, "the syncs must overlap the writers for this test to mean anything"
    assert set(got) == set(writers.committed)
    assert all(n == 1 for n in got.values()), "an event was delivered twice"
    assert not set(got) & set(writers.rolled_back)
