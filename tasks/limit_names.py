"""What a workspace's Prefect rate limit is called, and which existing limits it replaces.

One limit per Braze workspace and bucket, named so that an operator reading `prefect gcl ls` sees
whose it is and what it allows: `braze-<account>-<bucket>-<N>-per-<W>s-<digest>`, for example
`braze-acme-track-3000-per-3s-1a2b3c4d`. Prefect 3's global concurrency limits have no
description field (only a name, a limit, a slot decay and an active flag), so the rate is in the
name.

- `<account>` is the lowest id of the accounts configured with the workspace (same endpoint and
  key): accounts sharing a workspace must share one budget, so they must agree on one name.
- `<N>-per-<W>s` is the strictest configured rate among them (the workspace's limit is one number
  whatever account sends: the lowest any of them was given is the one that is safe for all).
- `<digest>` is 8 hex digits of a SHA-256 of the workspace key (itself the endpoint and a digest
  of the API key): a new key or endpoint gives a new name, and no key material is in it.

Nothing here talks to Prefect: `tasks/concurrency.py` does, with these names.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.braze.ratelimit import DELETE_BUCKET, TRACK_BUCKET
from masivo_braze_sync.settings import Settings

#: every limit this project creates starts so; nothing else on the server is ever touched
PREFIX = "braze-"

#: the account named when no configured account has the workspace any more (its configuration
#: changed while a run was starting: that run still needs a budget)
UNKNOWN_OWNER = "unknown-account"

#: characters Prefect refuses in names (`prefect.types.names.BANNED_CHARACTERS`)
_BANNED = str.maketrans(dict.fromkeys("/%&><", "_"))

_NAME = re.compile(
    rf"^{PREFIX}(?P<owner>.+)-(?P<bucket>{TRACK_BUCKET}|{DELETE_BUCKET})"
    r"-(?P<limit>\d+)-per-(?P<window>[0-9.]+)s-(?P<digest>[0-9a-f]{8})$"
)
#: the names used before accounts were in them: `braze-<bucket>-<sha256(workspace)[:16]>`
_LEGACY = re.compile(rf"^{PREFIX}(?P<bucket>{TRACK_BUCKET}|{DELETE_BUCKET})-(?P<digest>[0-9a-f]{{16}})$")


def workspace_digest(workspace: str, length: int = 8) -> str:
    """A short digest of a workspace key (`workspace_key`), safe to show anywhere."""
    return hashlib.sha256(workspace.encode()).hexdigest()[:length]


def _seconds(window: float) -> str:
    return str(int(window)) if float(window).is_integer() else f"{window:.3f}".rstrip("0")


@dataclass(frozen=True)
class LimitPlan:
    """The one global limit of a workspace's bucket: whose name it carries and what it allows."""

    owner: str
    bucket: str
    limit: int
    window_seconds: float
    digest: str

    @property
    def name(self) -> str:
        """The limit's name, e.g. `braze-acme-track-3000-per-3s-1a2b3c4d`."""
        owner = self.owner.translate(_BANNED)
        return f"{PREFIX}{owner}-{self.bucket}-{self.limit}-per-{_seconds(self.window_seconds)}s-{self.digest}"

    @property
    def rate(self) -> str:
        """The rate as a person reads it: "3000 per 3 s"."""
        return f"{self.limit} per {_seconds(self.window_seconds)} s"


def bucket_rate(account: AccountConfig, bucket: str, settings: Settings) -> tuple[int, float]:
    """(requests, window seconds) an account is configured with for a bucket."""
    return account.track_limit(settings) if bucket == TRACK_BUCKET else account.delete_limit(settings)


def plan_limit(
    workspace: str,
    bucket: str,
    sharers: Iterable[AccountConfig],
    settings: Settings,
    fallback: tuple[int, float],
) -> LimitPlan:
    """The limit every account in `sharers` (those configured with `workspace`) uses for `bucket`.

    The owner is the lowest account id and the rate the strictest (fewest requests per second;
    of equal rates, the shorter window, which allows smaller bursts). `fallback` is the rate of
    the run asking, used when no configured account has the workspace any more.
    """
    sharers = list(sharers)
    if not sharers:
        limit, window = fallback
        return LimitPlan(UNKNOWN_OWNER, bucket, limit, window, workspace_digest(workspace))
    rates = [bucket_rate(a, bucket, settings) for a in sharers]
    limit, window = min(rates, key=lambda r: (r[0] / r[1], r[1]))
    owner = min(a.account_id for a in sharers)
    return LimitPlan(owner, bucket, limit, float(window), workspace_digest(workspace))


def superseded(plan: LimitPlan, workspace: str, sharer_ids: Iterable[str], names: Iterable[str]) -> list[str]:
    """The names among `names` that `plan` replaces: limits of the same bucket that belonged to
    this workspace (same digest: an older owner or rate) or to one of its accounts (an account
    has one workspace, so its limits with another digest are from a key or endpoint it no longer
    has), and this workspace's limits under the names used before accounts were in them."""
    owners = {s.translate(_BANNED) for s in sharer_ids}
    legacy = workspace_digest(workspace, 16)
    out = []
    for name in names:
        if name == plan.name:
            continue
        m = _NAME.match(name)
        if m is not None:
            if m["bucket"] == plan.bucket and (m["digest"] == plan.digest or m["owner"] in owners):
                out.append(name)
            continue
        m = _LEGACY.match(name)
        if m is not None and m["bucket"] == plan.bucket and m["digest"] == legacy:
            out.append(name)
    return out


def active_slots_now(active_slots: int, decay_per_second: float, seconds_since_update: float) -> int:
    """Slots still held on a decaying limit, as the server would count them now.

    The server stores `active_slots` as of the last acquisition and subtracts the decay only when
    slots are next taken; a limit nobody uses shows its old count forever.
    """
    if decay_per_second <= 0:
        return active_slots
    return max(0, active_slots - math.floor(decay_per_second * max(0.0, seconds_since_update)))
