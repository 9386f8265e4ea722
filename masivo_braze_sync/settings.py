"""Process-wide settings, read from the environment (`MASIVO_*`) by pydantic-settings.

Per-account settings (API key, endpoint, toggles, per-account limits) live in Masivo's
`braze_integrations` table, not here; these are the defaults and the knobs of the process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from masivo_braze_sync.braze.limits import BRAZE

#: the checkout (or install) root: the embedded Postgres lives in a git-ignored folder here
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Settings of one sync process. Every field maps to `MASIVO_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MASIVO_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL of Masivo's database. Unset: an embedded Postgres in .masivo/.",
    )
    embedded_dir: Path = Field(default=PROJECT_ROOT / ".masivo" / "pgdata")
    braze_allow_local_endpoints: bool = Field(
        default=False, description="Also accept http://127.0.0.1:<port> / http://localhost:<port> (emulator)."
    )

    # extraction
    batch_rows: int = Field(default=20_000, ge=1, description="Change-log rows per batch (memory bound).")
    extract_readers: int = Field(
        default=1,
        ge=1,
        le=2,
        description="Connections one large read takes at once (2: the range's keys in two halves, read side by side;"
        " for a database with cores to spare: about 1.4x the server CPU of one read).",
    )

    account_concurrency: int = Field(default=16, ge=1, description="Accounts synced at once per flow.")

    # Braze defaults; an account can override the limits in braze_integrations
    braze_concurrency: int = Field(default=64, ge=1, description="Requests in flight per account.")
    braze_timeout_seconds: float = Field(default=30.0, gt=0)
    braze_max_retries: int = Field(default=6, ge=0)
    braze_backoff_base_seconds: float = Field(default=0.5, ge=0)
    braze_backoff_max_seconds: float = Field(default=60.0, ge=0)
    # Unset limits follow what Braze announces (X-RateLimit-Limit), starting from Braze's default;
    # a set limit is the most the pacer uses (docs/braze.md#rate-limit-headers).
    track_rate_limit: int | None = Field(
        default=None, ge=2, description="/users/track requests per window at most (unset: what Braze announces)."
    )
    track_rate_window_seconds: float = Field(default=BRAZE.track_window_seconds, gt=0)
    delete_rate_limit: int | None = Field(
        default=None, ge=2, description="/users/delete requests per window at most (unset: what Braze announces)."
    )
    delete_rate_window_seconds: float = Field(default=BRAZE.delete_window_seconds, gt=0)
    # live mode (docs/live.md)
    live_collect_ms: float = Field(
        default=30.0, ge=0, description="Live: wait this long after a wake-up before reading (a burst fills requests)."
    )
    live_sweep_seconds: float = Field(
        default=30.0, gt=0, description="Live: look at every (entity, account) this often, notified or not."
    )
    live_retry_min_seconds: float = Field(
        default=0.02, gt=0, description="Live: first look again at a change held behind the capture horizon."
    )
    live_retry_max_seconds: float = Field(default=1.0, gt=0, description="Live: longest wait between such looks.")
    live_failure_backoff_max_seconds: float = Field(
        default=60.0, gt=0, description="Live: longest wait before an account that failed is tried again."
    )
    live_idle_close_seconds: float = Field(
        default=60.0, gt=0, description="Live: close a consumer's run (and its lock's session) idle this long."
    )
    live_summary_seconds: float = Field(
        default=60.0, gt=0, description="Live: record each account's summary this often (run_summaries)."
    )
    objects_per_request: int = Field(default=BRAZE.objects_per_array, ge=1, le=BRAZE.objects_per_array)
    delete_ids_per_request: int = Field(default=BRAZE.delete_ids_per_request, ge=1, le=BRAZE.delete_ids_per_request)

    # alerts (docs/operations.md#alerts)
    alert_rejected_rows: int = Field(
        default=100, ge=1, description="Rejected rows in one account run that mark its event as above the threshold."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (cached; tests clear the cache with `get_settings.cache_clear()`)."""
    return Settings()
