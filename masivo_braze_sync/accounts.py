"""Accounts and their Braze integration settings, read from Masivo's tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.braze.ratelimit import workspace_key
from masivo_braze_sync.errors import ConfigurationError
from masivo_braze_sync.settings import Settings

#: the prefix of `braze_integrations`' toggle columns: every one is read, so a new entity's toggle
#: needs only its column (`db/models.py`, a migration); entities name theirs (`Entity.toggles`)
TOGGLE_PREFIX = "sync_"

#: how an account's orders reach Braze (`braze_integrations.orders_as`; null = the first)
ORDERS_AS = ("purchases", "ecommerce", "both")


@dataclass(frozen=True)
class AccountConfig:
    """One account's Braze integration. The API key never appears in repr, logs or messages."""

    account_id: str
    name: str
    currency: str
    rest_endpoint: str | None
    enabled: bool
    toggles: dict[str, bool]
    combined_object_limit: bool = False
    track_rate_limit: int | None = None
    track_rate_window_seconds: float | None = None
    delete_rate_limit: int | None = None
    #: `braze_integrations.orders_as` as stored (None = purchases); checked by `orders_mode()`
    orders_as: str | None = None
    api_key: str | None = field(default=None, repr=False)

    def is_on(self, toggle: str) -> bool:
        """Whether the integration is enabled and this kind of data is switched on."""
        return self.enabled and self.toggles.get(toggle, False)

    def missing_settings(self) -> list[str]:
        """Names of required settings that are empty (the configuration is incomplete)."""
        missing = []
        if not self.api_key or not self.api_key.strip():
            missing.append("api_key")
        if not self.rest_endpoint or not self.rest_endpoint.strip():
            missing.append("rest_endpoint")
        return missing

    def orders_mode(self) -> str:
        """How orders are sent: one of ORDERS_AS, or ConfigurationError naming the account."""
        value = "purchases" if self.orders_as is None else self.orders_as
        if value not in ORDERS_AS:
            shown = self.orders_as[:40]  # a setting, not customer data; cut so a stray blob stays one line
            raise ConfigurationError(
                f"account {self.account_id}: orders_as {shown!r} is not one of {', '.join(ORDERS_AS)}"
            )
        return value

    @property
    def workspace(self) -> str:
        """An opaque key of the Braze workspace (endpoint + key digest) for shared rate limits."""
        return workspace_key(self.rest_endpoint or "", self.api_key or "")

    def track_limit(self, settings: Settings) -> tuple[int, float]:
        """(requests, window seconds) for /users/track: the configured limit, else Braze's default."""
        return (
            self.track_ceiling(settings) or BRAZE.track_requests,
            self.track_rate_window_seconds or settings.track_rate_window_seconds,
        )

    def track_ceiling(self, settings: Settings) -> int | None:
        """The configured /users/track limit (the account's, else the process's), or None.

        A configured limit is the most the pacer uses; without one it follows what Braze
        announces (docs/braze.md#rate-limit-headers).
        """
        return self.track_rate_limit or settings.track_rate_limit

    def delete_limit(self, settings: Settings) -> tuple[int, float]:
        """(requests, window seconds) for /users/delete."""
        return (self.delete_ceiling(settings) or BRAZE.delete_requests, settings.delete_rate_window_seconds)

    def delete_ceiling(self, settings: Settings) -> int | None:
        """The configured /users/delete limit, or None (see `track_ceiling`)."""
        return self.delete_rate_limit or settings.delete_rate_limit


ACCOUNTS_SQL = f"""
SELECT a.id AS account_id, a.name, a.currency, i.api_key, i.rest_endpoint, i.enabled,
       (SELECT jsonb_object_agg(t.key, t.value) FROM jsonb_each(to_jsonb(i)) t
        WHERE starts_with(t.key, '{TOGGLE_PREFIX}')) AS toggles,
       i.combined_object_limit, i.track_rate_limit, i.track_rate_window_seconds, i.delete_rate_limit,
       i.orders_as
FROM public.accounts a JOIN public.braze_integrations i ON i.account_id = a.id
WHERE %(ids)s::text[] IS NULL OR a.id = ANY(%(ids)s::text[])
ORDER BY a.id
"""


def load_accounts(conn: psycopg.Connection, account_ids: list[str] | None = None) -> list[AccountConfig]:
    """Accounts that have a Braze integration row (all, or those named)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(ACCOUNTS_SQL, {"ids": account_ids or None}).fetchall()
    return [
        AccountConfig(
            account_id=r["account_id"],
            name=r["name"],
            currency=(r["currency"] or "USD").strip(),
            rest_endpoint=r["rest_endpoint"],
            enabled=r["enabled"],
            toggles={t: bool(on) for t, on in r["toggles"].items()},
            combined_object_limit=r["combined_object_limit"],
            track_rate_limit=r["track_rate_limit"],
            track_rate_window_seconds=r["track_rate_window_seconds"],
            delete_rate_limit=r["delete_rate_limit"],
            orders_as=r["orders_as"],
            api_key=r["api_key"],
        )
        for r in rows
    ]


def known_account_ids(conn: psycopg.Connection) -> set[str]:
    """Ids of every account, with or without an integration."""
    return {r[0] for r in conn.execute("SELECT id FROM public.accounts").fetchall()}
