"""A local Braze emulator: a real HTTP server on loopback that tests and benchmarks use instead of
Braze (docs/braze.md#what-the-emulator-checks).

    state = EmulatorState()
    state.add_workspace(Workspace(name="acct-1", api_key="key-1"))
    with EmulatorServer(state) as server:          # uvicorn in a background thread, port 0
        httpx.post(f"{server.url}/users/track", ...)
    state.profile("acct-1", "cust-1"); state.stats("acct-1")

It serves `POST /users/track` and `POST /users/delete` with Braze's authentication, per-workspace
fixed-window rate limits, per-object validation and response shapes, applies accepted data to
in-memory profiles, counts data points, and injects faults (`Fault`). An admin API under
`/_emulator/` configures it from another process. Module map: `validation` (what Braze rejects),
`apply` (what accepted data does to profiles), `state` (workspaces, limits, faults, stats),
`app` (the ASGI app), `server` (running it).
"""

from __future__ import annotations

from masivo_braze_sync.emulator.app import EmulatorApp, create_app
from masivo_braze_sync.emulator.apply import Profile
from masivo_braze_sync.emulator.server import EmulatorServer, serve
from masivo_braze_sync.emulator.state import EmulatorState, Fault, Workspace, WorkspaceStats

__all__ = [
    "EmulatorApp",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "Profile",
    "Workspace",
    "WorkspaceStats",
    "create_app",
    "serve",
]
