"""Which limit a workspace's accounts agree on, and which older limits it replaces (no server)."""

from __future__ import annotations

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.braze.ratelimit import workspace_key
from masivo_braze_sync.settings import Settings
from tasks.limit_names import UNKNOWN_OWNER, active_slots_now, plan_limit, superseded, workspace_digest

WS = workspace_key("https://rest.iad-01.braze.com", "k1")


def account(account_id: str, **kw) -> AccountConfig:
    return AccountConfig(account_id, account_id, "USD", "https://rest.iad-01.braze.com", True, {}, api_key="k1", **kw)


def test_the_plan_names_the_lowest_account_and_the_strictest_rate() -> None:
    settings = Settings()
    plan = plan_limit(
        WS,
        "track",
        [account("zeta", track_rate_limit=1000), account("acme-eu", track_rate_limit=3000)],
        settings,
        fallback=(1, 1.0),
    )
    assert plan.name == f"braze-acme-eu-track-1000-per-3s-{workspace_digest(WS)}"
    assert plan.rate == "1000 per 3 s"


def test_names_never_hold_characters_prefect_refuses_and_a_lost_account_still_gets_a_limit() -> None:
    plan = plan_limit(WS, "delete", [account("a/b<c")], Settings(), fallback=(1, 1.0))
    assert not set("/%&><") & set(plan.name)
    orphan = plan_limit(WS, "track", [], Settings(), fallback=(50, 1.5))
    assert orphan.name == f"braze-{UNKNOWN_OWNER}-track-50-per-1.5s-{workspace_digest(WS)}"


def test_superseded_limits_are_the_workspaces_and_its_accounts_older_ones_of_the_same_bucket() -> None:
    plan = plan_limit(WS, "track", [account("acme")], Settings(), fallback=(1, 1.0))
    d = plan.digest
    names = [
        plan.name,
        f"braze-acme-track-1000-per-3s-{d}",  # an older rate
        "braze-acme-track-3000-per-3s-00000000",  # the account's older key
        f"braze-other-track-3000-per-3s-{d}",  # an older owner of this workspace
        f"braze-track-{workspace_digest(WS, 16)}",  # the names used before
        "braze-acme-delete-20000-per-60s-00000000",  # another bucket
        "braze-acme-eu-track-3000-per-3s-11111111",  # another account whose id starts the same
        "braze-track-0123456789abcdef",  # another workspace's old-style limit
        "my-own-limit",
    ]
    assert superseded(plan, WS, ["acme"], names) == names[1:5]


def test_slots_decay_as_the_server_counts_them() -> None:
    assert active_slots_now(64, 10.0, 3.0) == 34
    assert active_slots_now(64, 10.0, 60.0) == 0
    assert active_slots_now(5, 0.0, 60.0) == 5
