"""The demo's live part: each change reaches the emulator, and the demo prints how long it took."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from app.demo import seed_account
from app.demo_live import run_live_demo


def test_the_live_demo_prints_commit_to_braze_for_each_change(db, emulator, emulator_url, run_sync) -> None:
    from masivo_braze_sync.emulator import Workspace

    emulator.add_workspace(Workspace(name="demo-x", api_key="demo-x-key"))
    seed_account(db, "demo-x", endpoint=emulator_url, api_key="demo-x-key", customers=40, events=20)
    for entity in ("customers", "events", "purchases", "audiences"):
        run_sync("demo-x", entity)  # the batch runs first, as in the demo
    out = io.StringIO()
    assert asyncio.run(run_live_demo(Console(file=out, width=120), db, emulator, ("demo-x",)))
    text = out.getvalue()
    for change in ("new customer", "its first event", "a purchase", "customer update"):
        assert change in text
    assert "not arrived" not in text
    assert "commit → Braze, ms" in text
    assert "live mode stopped cleanly" in text
    first_seen = {}
    for _, array, obj in emulator.arrivals("demo-x"):
        first_seen.setdefault(obj.get("external_id"), array)
    assert first_seen["demo-x-live-1"] == "attributes"  # the profile before its first event
