"""The exception tree, grouped by what the caller should do.

    SyncError
    ├── ConfigurationError        fix the account or the environment; retrying will not help
    │   ├── EndpointNotAllowed    REST endpoint is not a Braze instance (or not allowed locally)
    │   └── AuthenticationError   Braze answered 401/403: the key is wrong, revoked or lacks a permission
    ├── RetryableError            transient: 429, 5xx, timeouts, connection errors; try again later
    │   ├── RateLimited           429 with the wait Braze asked for
    │   └── DatabaseUnavailable   Postgres down, restarting or unreachable; the configuration may be right
    ├── PermanentError            the request itself is wrong (other 4xx); do not resend it as is
    └── RecordRejected            one record cannot be sent; it is recorded, the rest goes on

Messages carry account ids, status codes and counts, never API keys, payloads or customer data:
Prefect stores exception messages in its database (docs/prefect.md#result-persistence-and-what-prefect-stores).
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class for every error this package raises on purpose."""

    def __reduce__(self):  # keep exceptions picklable whatever their constructor (Prefect moves them)
        return (self.__class__.__new__, (self.__class__,), self.__dict__ | {"args": self.args})

    def __setstate__(self, state: dict) -> None:
        self.args = state.pop("args", ())
        self.__dict__.update(state)


class ConfigurationError(SyncError):
    """The account's integration settings or the environment are wrong or incomplete."""


class EndpointNotAllowed(ConfigurationError):
    """The configured REST endpoint is not a Braze instance; no key is ever sent to it."""


class AuthenticationError(ConfigurationError):
    """Braze refused the API key (401) or the key lacks a permission (403)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RetryableError(SyncError):
    """A transient failure: the same request may succeed later."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: seconds Braze asked us to wait, when it said so
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """Braze answered 429."""


class DatabaseUnavailable(RetryableError):
    """Postgres did not accept connections for a while (down, restarting, fail-over, network): the
    run stops and the next one resumes; nothing in the configuration needs fixing unless it persists."""


class PermanentError(SyncError):
    """Braze refused the request itself (400, 404, 413 ...): resending it unchanged cannot succeed."""

    def __init__(self, message: str, *, status_code: int | None = None, errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: Braze's per-object errors when the body had them (`type`, `input_array`, `index`)
        self.errors = errors or []


class RecordRejected(SyncError):
    """One source row cannot become a valid Braze object; `reason` says why (no row data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccountSyncFailed(SyncError):
    """Raised at the end of a multi-account run when at least one account failed."""

    def __init__(self, failures: dict[str, str], summaries: list | None = None) -> None:
        # each account's reason in the message: it is what the parent run's state shows first
        reasons = "; ".join(f"{a}: {failures[a].removeprefix(f'account {a}: ')}" for a in sorted(failures))
        super().__init__(f"{len(failures)} account(s) failed: {reasons}")
        self.failures = failures
        #: every account's summary (counts only), failed or not, for the caller's report
        self.summaries = summaries or []
