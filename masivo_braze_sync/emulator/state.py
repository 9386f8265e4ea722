"""The emulator's in-memory Braze: workspaces, profiles, rate-limit windows, faults and stats.

One `EmulatorState` is shared by the server thread (the ASGI app) and test code, so every
mutation happens under one lock. Reads for tests return copies, never live objects.
How applied data is modelled is in `apply.py`'s docstring; validation is in `validation.py`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from masivo_braze_sync.emulator import apply
from masivo_braze_sync.emulator.apply import Profile, Store
from masivo_braze_sync.emulator.validation import ARRAYS, TrackPlan

__all__ = ["FAULT_KINDS", "Admission", "EmulatorState", "Fault", "Profile", "Workspace", "WorkspaceStats"]

TRACK_PATH = "/users/track"
DELETE_PATH = "/users/delete"
FAULT_KINDS = frozenset({"status", "rate_limit", "timeout", "applied_then_500", "reset"})
REQUEST_TIMES_MAX = 100_000


def _known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """`data` when every key is a field of the dataclass `cls`, else ValueError naming the others."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} fields: {sorted(unknown)}")
    return data


@dataclass(frozen=True, slots=True)
class Workspace:
    """One Braze workspace as the emulator sees it: its REST key, limits and behaviour knobs."""

    name: str
    api_key: str
    #: `/users/track` bucket: `rate_limit` requests per fixed window of `rate_window_seconds`
    rate_limit: int = 3000
    rate_window_seconds: float = 3.0
    #: `/users/delete` bucket (shared with alias/identify/merge on real Braze)
    delete_rate_limit: int = 20000
    delete_rate_window_seconds: float = 60.0
    #: "per_array": 75 per array (legacy); "combined": 75 objects in total (docs/braze.md#batching-regimes)
    batch_mode: str = "per_array"
    max_objects: int = 75
    max_delete_ids: int = 50
    permissions: frozenset[str] = frozenset({"users.track", "users.delete"})
    #: added to every request of this workspace (benchmarks model the network round trip)
    latency_seconds: float = 0.0
    #: "epoch": x-ratelimit-reset is the window's end in epoch seconds; "delta": seconds left
    reset_header_style: str = "epoch"
    #: /users/track requests per second another producer (a CDI sync, another integration) takes
    #: from the same budget, spread evenly over each window (docs/braze.md#rate-limit-headers)
    competing_per_second: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or not self.api_key:
            raise ValueError("a workspace needs a name and an api_key")
        if self.batch_mode not in ("per_array", "combined"):
            raise ValueError(f"batch_mode must be 'per_array' or 'combined', not {self.batch_mode!r}")
        if self.reset_header_style not in ("epoch", "delta"):
            raise ValueError(f"reset_header_style must be 'epoch' or 'delta', not {self.reset_header_style!r}")
        for name in ("rate_limit", "delete_rate_limit", "max_objects", "max_delete_ids"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.rate_window_seconds <= 0 or self.delete_rate_window_seconds <= 0:
            raise ValueError("rate windows must be positive")
        if self.latency_seconds < 0:
            raise ValueError("latency_seconds must not be negative")
        if not (math.isfinite(self.competing_per_second) and self.competing_per_second >= 0):
            raise ValueError("competing_per_second must be a non-negative number")
        # accept any iterable (lists from the admin API) but store an immutable set
        object.__setattr__(self, "permissions", frozenset(self.permissions))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workspace:
        """Build from JSON fields (admin API); unknown fields raise ValueError."""
        return cls(**_known_fields(cls, data, "workspace"))


@dataclass(slots=True)
class Fault:
    """An injected failure, matched against requests by workspace and path (None = any).

    Hits the next `count` matching requests, or, with `probability`, each matching request with
    that chance until removed. Kinds: "status" (answer `status`, not applied), "rate_limit"
    (429, not applied), "timeout" (sleep `delay_seconds`, then 504, not applied),
    "applied_then_500" (apply, then 500) and "reset" (drop the connection, not applied).
    """

    kind: str
    count: int = 1
    status: int = 500
    workspace: str | None = None
    path: str | None = None
    probability: float | None = None
    delay_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.probability is None and self.count < 1:
            raise ValueError("count must be at least 1")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from JSON fields (admin API); unknown fields raise ValueError."""
        return cls(**_known_fields(cls, data, "fault"))


@dataclass(slots=True)
class WorkspaceStats:
    """What one workspace's endpoints saw. `EmulatorState.stats` returns a snapshot copy."""

    #: every authenticated request to /users/track or /users/delete (401s have no workspace)
    requests: int = 0
    requests_by_path: dict[str, int] = field(default_factory=dict)
    status_counts: dict[int, int] = field(default_factory=dict)
    #: responses with status 429 (real rate limiting and injected "rate_limit" faults)
    rate_limited: int = 0
    #: array name -> objects that passed validation
    objects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ARRAYS, 0))
    rejected_objects: int = 0
    #: billed data points: attribute keys written (identifiers and control keys excluded)
    data_points: int = 0
    #: most /users/track requests admitted by the rate limiter within one fixed window (ours only)
    max_in_window: int = 0
    #: epoch times (state clock) of /users/track requests admitted by the rate limiter
    request_times: deque[float] = field(default_factory=lambda: deque(maxlen=REQUEST_TIMES_MAX))
    #: ids accepted by /users/delete
    deleted: int = 0
    #: fault kind -> requests it hit
    faults_injected: dict[str, int] = field(default_factory=dict)

    def copy(self) -> WorkspaceStats:
        """A deep-enough copy: containers are new, values are immutable."""
        return replace(
            self,
            requests_by_path=dict(self.requests_by_path),
            status_counts=dict(self.status_counts),
            objects=dict(self.objects),
            request_times=deque(self.request_times, maxlen=REQUEST_TIMES_MAX),
            faults_injected=dict(self.faults_injected),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (admin API)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["request_times"] = list(self.request_times)
        return out


#: how many arrivals each workspace remembers (latency measurements; bounded for long-lived emulators)
ARRIVALS_KEPT = 500_000


@dataclass(slots=True)
class _Bucket:
    window: int = -1
    count: int = 0


@dataclass(slots=True)
class _Runtime:
    """Mutable per-workspace data, guarded by the state's lock."""

    ws: Workspace
    store: Store = field(default_factory=Store)
    stats: WorkspaceStats = field(default_factory=WorkspaceStats)
    track: _Bucket = field(default_factory=_Bucket)
    delete: _Bucket = field(default_factory=_Bucket)
    #: (arrival time, array, object) of the latest stored /users/track objects, oldest first
    arrivals: deque = field(default_factory=lambda: deque(maxlen=ARRIVALS_KEPT))


@dataclass(slots=True)
class Admission:
    """The rate limiter's verdict on one request, with what its headers need."""

    allowed: bool
    limit: int
    remaining: int
    window_end: float
    now: float
    delta_style: bool

    def _reset(self) -> bytes:
        if self.delta_style:
            return str(max(1, math.ceil(self.window_end - self.now))).encode()
        return str(math.ceil(self.window_end)).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers for a non-429 response."""
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", self._reset()),
        ]

    def limited_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers for a 429: the same three as any answer (Braze's rate-limit page says every
        response carries them), plus how long to wait (integer seconds, at least 1)."""
        wait = max(1, math.ceil(self.window_end - self.now))
        return [*self.headers(), (b"x-ratelimit-retry-after", str(wait).encode())]


class EmulatorState:
    """Everything the emulator knows; thread-safe.

    `clock` (default `time.time`) drives the rate-limit windows and `request_times`; `seed`
    makes probabilistic faults reproducible.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rng = random.Random(seed)  # fault injection, not security
        self._rt: dict[str, _Runtime] = {}
        # api key -> workspace; replaced wholesale (copy-on-write) so lookups need no lock
        self._by_key: dict[str, Workspace] = {}
        self._faults: list[Fault] = []

    # Configuration --------------------------------------------------------------------------

    def add_workspace(self, ws: Workspace) -> None:
        """Add a workspace, or replace the configuration of one with the same name (data kept)."""
        with self._lock:
            for other in self._rt.values():
                if other.ws.api_key == ws.api_key and other.ws.name != ws.name:
                    raise ValueError(f"api key already used by workspace {other.ws.name!r}")
            rt = self._rt.get(ws.name)
            if rt is None:
                self._rt[ws.name] = _Runtime(ws)
            else:
                rt.ws = ws
            self._by_key = {r.ws.api_key: r.ws for r in self._rt.values()}

    def remove_workspace(self, name: str) -> None:
        """Forget a workspace and its data."""
        with self._lock:
            self._rt.pop(name, None)
            self._by_key = {r.ws.api_key: r.ws for r in self._rt.values()}

    def workspaces(self) -> dict[str, Workspace]:
        """Configured workspaces by name."""
        with self._lock:
            return {name: rt.ws for name, rt in self._rt.items()}

    def workspace_names(self) -> list[str]:
        """Names of the configured workspaces, in the order they were added."""
        with self._lock:
            return list(self._rt)

    def workspace_for_key(self, api_key: str) -> Workspace | None:
        """The workspace owning this REST key, if any."""
        return self._by_key.get(api_key)

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault; the state keeps its own copy (the caller's object is not mutated)."""
        with self._lock:
            self._faults.append(replace(fault))

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        """Pending faults (copies; `count` is what is left)."""
        with self._lock:
            return [replace(f) for f in self._faults]

    def reset(self) -> None:
        """Forget profiles, deletions, stats, rate-limit windows and faults; keep workspaces."""
        with self._lock:
            self._rt = {name: _Runtime(rt.ws) for name, rt in self._rt.items()}
            self._faults.clear()

    # Inspection (copies) --------------------------------------------------------------------

    def _runtime(self, workspace: str) -> _Runtime:
        try:
            return self._rt[workspace]
        except KeyError:
            raise KeyError(f"unknown workspace {workspace!r}") from None

    def profile(self, workspace: str, external_id: str) -> Profile | None:
        """A copy of the profile with this external id, or None."""
        with self._lock:
            p = self._runtime(workspace).store.profiles.get(external_id)
            return p.copy() if p is not None else None

    def profiles(self, workspace: str) -> dict[str, Profile]:
        """Copies of every profile that has an external id, keyed by it."""
        with self._lock:
            return {k: p.copy() for k, p in self._runtime(workspace).store.profiles.items()}

    def anonymous_profiles(self, workspace: str) -> dict[tuple, Profile]:
        """Copies of profiles without an external id (alias, email or phone only)."""
        with self._lock:
            return {k: p.copy() for k, p in self._runtime(workspace).store.anonymous.items()}

    def arrivals(self, workspace: str) -> list[tuple[float, str, dict[str, Any]]]:
        """(time stored, array, object) of each valid /users/track object, in arrival order
        (attributes before events before purchases within a request); at most ARRIVALS_KEPT."""
        with self._lock:
            return list(self._runtime(workspace).arrivals)

    def deleted_ids(self, workspace: str) -> list[str]:
        """External ids deleted through /users/delete, in order."""
        with self._lock:
            return list(self._runtime(workspace).store.deleted)

    def stats(self, workspace: str) -> WorkspaceStats:
        """A snapshot of the workspace's counters."""
        with self._lock:
            return self._runtime(workspace).stats.copy()

    # Used by the ASGI app -------------------------------------------------------------------

    def _window(self, rt: _Runtime, path: str, now: float) -> tuple[_Bucket, int, float, int, int]:
        """(bucket, limit, window, window id, requests another producer took so far in it)."""
        ws = rt.ws
        if path == TRACK_PATH:
            bucket, limit, window = rt.track, ws.rate_limit, ws.rate_window_seconds
            # the competitor sends evenly: by this point of the window it has taken its share of it
            others = math.floor(ws.competing_per_second * (now - math.floor(now / window) * window))
        else:
            bucket, limit, window, others = rt.delete, ws.delete_rate_limit, ws.delete_rate_window_seconds, 0
        wid = math.floor(now / window)
        if bucket.window != wid:
            bucket.window = wid
            bucket.count = 0
        return bucket, limit, window, wid, others

    def admit(self, workspace: str, path: str) -> Admission:
        """Count a request against its bucket (fixed windows aligned to the epoch)."""
        now = self._clock()
        with self._lock:
            rt = self._rt[workspace]
            ws = rt.ws
            bucket, limit, window, wid, others = self._window(rt, path, now)
            # 429s are counted too; with fixed windows that changes nothing but `remaining`
            bucket.count += 1
            st = rt.stats
            st.requests += 1
            st.requests_by_path[path] = st.requests_by_path.get(path, 0) + 1
            allowed = bucket.count + others <= limit
            if allowed and path == TRACK_PATH:
                if bucket.count > st.max_in_window:
                    st.max_in_window = bucket.count
                st.request_times.append(now)
            remaining = max(0, limit - bucket.count - others)
        return Admission(allowed, limit, remaining, (wid + 1) * window, now, ws.reset_header_style == "delta")

    def peek(self, workspace: str, path: str) -> Admission:
        """The current window's state without counting a request (headers of injected 429s)."""
        now = self._clock()
        with self._lock:
            rt = self._rt[workspace]
            ws = rt.ws
            bucket, limit, window, wid, others = self._window(rt, path, now)
            remaining = max(0, limit - bucket.count - others)
        return Admission(True, limit, remaining, (wid + 1) * window, now, ws.reset_header_style == "delta")

    def record_status(self, workspace: str, status: int, *, path: str | None = None) -> None:
        """Count a response. With `path`, also count the request (those that skip `admit`)."""
        with self._lock:
            rt = self._rt.get(workspace)
            if rt is None:  # removed meanwhile
                return
            st = rt.stats
            if path is not None:
                st.requests += 1
                st.requests_by_path[path] = st.requests_by_path.get(path, 0) + 1
            st.status_counts[status] = st.status_counts.get(status, 0) + 1
            if status == 429:
                st.rate_limited += 1

    def take_fault(self, workspace: str, path: str) -> Fault | None:
        """The fault that hits this request, if any (consumes one of its `count`)."""
        if not self._faults:  # the common case, without taking the lock
            return None
        with self._lock:
            for i, f in enumerate(self._faults):
                if (f.workspace is not None and f.workspace != workspace) or (f.path is not None and f.path != path):
                    continue
                if f.probability is not None:
                    if self._rng.random() >= f.probability:
                        continue
                else:
                    f.count -= 1
                    if f.count <= 0:
                        del self._faults[i]
                rt = self._rt.get(workspace)
                if rt is not None:
                    fi = rt.stats.faults_injected
                    fi[f.kind] = fi.get(f.kind, 0) + 1
                # the app only reads kind/status/delay, which never change after creation
                return f
        return None

    def apply_track(self, workspace: str, plan: TrackPlan) -> None:
        """Apply a validated /users/track body (attributes, then events, then purchases)."""
        with self._lock:
            rt = self._rt[workspace]
            st = rt.stats
            st.rejected_objects += len(plan.errors)
            now = self._clock()
            for name, items in plan.valid.items():
                st.objects[name] = st.objects.get(name, 0) + len(items)
                rt.arrivals.extend((now, name, obj) for _, obj in items)
            st.data_points += apply.apply_track(rt.store, plan)

    def apply_delete(self, workspace: str, kind: str, ids: list[Any]) -> int:
        """Delete users; returns how many ids were queued (all valid ids sent)."""
        with self._lock:
            rt = self._rt[workspace]
            apply.apply_delete(rt.store, kind, ids)
            rt.stats.deleted += len(ids)
            return len(ids)
