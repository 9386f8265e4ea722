"""The Braze REST client: `/users/track` and `/users/delete` with pacing, retries and classification.

Shape, as HTTPX's own clients: the client holds policy (auth header, timeouts, retries, pacing) and
delegates bytes on the wire to an `httpx.AsyncBaseTransport`, which tests replace with
`httpx.MockTransport`. Every response is classified in one place, `classify_status`, the way
singer-sdk's `validate_response` does (docs/braze.md#status-codes):

    2xx            success (201, or 202 "queued" from older docs); 201 may carry
                   per-object `errors`, returned, not raised
    429            retry after the wait Braze asked for; the whole workspace pauses (RateLimited)
    5xx            retry with exponential backoff (RetryableError); may have been applied
    401 / 403      AuthenticationError: wrong key, wrong instance, missing permission
    3xx            PermanentError: redirects are never followed, so the key is never forwarded
    other 4xx      PermanentError: resending the same request cannot succeed
    timeouts and transport errors: retried (RetryableError when attempts run out)

Retries use a small explicit loop rather than tenacity: each wait comes from the response
headers of that attempt (and also pauses the shared limiter), and the loop has to tally
attempts, 429s and "may have been applied" for the delivery ledger; expressing that through
tenacity's callbacks was longer and harder to read than the loop itself.

Braze has no idempotency key (docs/braze.md#request-and-response-format): a retried request whose
earlier attempt landed is applied twice, so results and errors say whether that may have happened
(`possibly_duplicated` on results, `possibly_applied` on exceptions).

Privacy (docs/prefect.md#result-persistence-and-what-prefect-stores): exception messages carry the
endpoint path, status codes, counts and Braze's `message` when it is short and generic; never the
key, the request body or the rest of the response body. The key is not in `repr(client)` and the
client refuses to be pickled.

One client belongs to one event loop (httpx connections are bound to it,
docs/prefect.md#event-loops-and-http-clients):
create it inside the async task that uses it. Its limiters, by contrast, are shared across
loops and threads.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx
import orjson

from masivo_braze_sync import __version__
from masivo_braze_sync.braze.endpoints import validate_rest_endpoint
from masivo_braze_sync.braze.headers import RateLimitHeaders, parse_rate_limit_headers
from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.braze.ratelimit import (
    DELETE_BUCKET,
    TRACK_BUCKET,
    RateLimiter,
    limiters,
    workspace_key,
)
from masivo_braze_sync.braze.transport import AiohttpTransport
from masivo_braze_sync.errors import (
    AuthenticationError,
    ConfigurationError,
    PermanentError,
    RateLimited,
    RetryableError,
    SyncError,
)

__all__ = [
    "BrazeClient",
    "BrazeSettings",
    "DeleteResult",
    "Outcome",
    "TrackResult",
    "classify_status",
]

TRACK_PATH = "/users/track"
DELETE_PATH = "/users/delete"

# Braze's `message` goes into an exception only if it looks like a fixed phrase ("Bad Request",
# "Max Input Length Exceeded", "Valid data must be provided in the 'attributes', ... fields."):
# letters and light punctuation, no digits, '@', quotes or braces that would signal an echoed
# value (an email, a phone number, a JSON fragment).
_GENERIC_MESSAGE_RE = re.compile(r"[A-Za-z][A-Za-z ,.;:'()_/-]{0,119}")

# Transport errors raised before any byte of the request could reach Braze: retrying them
# cannot duplicate anything. Everything else (read/write errors and timeouts, protocol errors
# from the server, close errors) happened after the request may have been received.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


def _proxy_for(url: httpx.URL) -> str | None:
    """The proxy the standard environment variables choose for `url`, or None (direct).

    `HTTPS_PROXY` / `HTTP_PROXY` for the URL's scheme, else `ALL_PROXY`; `NO_PROXY` lists hosts
    (a domain also covers its subdomains, with or without a leading dot), IP addresses,
    `host:port` or `*` that go direct, as httpx and curl read them. httpx applies these only
    when it builds its own transport; this client builds its own (sharded), so it asks here.
    One client talks to one host, so the choice is made once.
    """
    env = urllib.request.getproxies_environment()  # either case; ignores HTTP_PROXY under CGI
    proxy = env.get(url.scheme) or env.get("all")
    if not proxy:
        return None
    host, port = url.host.lower(), url.port or (443 if url.scheme == "https" else 80)
    for entry in (e.strip().lower() for e in env.get("no", "").split(",")):
        if not entry:
            continue
        if entry == "*":
            return None
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        name = name.strip("[]") or entry
        if entry_port and entry_port != str(port):
            continue
        domain = name.lstrip(".")
        if host == domain or host.endswith(f".{domain}"):
            return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass(frozen=True)
class BrazeSettings:
    """Client tuning; the defaults suit real Braze.

    Attributes:
        timeout_seconds: httpx connect/read/write/pool timeout per attempt.
        max_retries: retries after the first attempt (so at most `max_retries + 1` attempts).
        backoff_base_seconds: first backoff step; the n-th retry waits a uniformly random
            time in [0, min(max, base * 2**n)] ("full jitter") unless Braze said how long.
        backoff_max_seconds: cap of the exponential backoff.
        concurrency: requests in flight at once per client (also the connection pool size).
        max_retry_wait_seconds: the longest server-requested wait the client sleeps through;
            if Braze asks for more (an hourly limit, docs/braze.md#limits), the client raises at once
            with `retry_after` set so the run can be rescheduled instead of holding a worker.
    """

    timeout_seconds: float = 30.0
    max_retries: int = 6
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 60.0
    concurrency: int = 64
    max_retry_wait_seconds: float = 300.0

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "backoff_max_seconds", "max_retry_wait_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")
        if not (math.isfinite(self.backoff_base_seconds) and self.backoff_base_seconds >= 0):
            raise ValueError("backoff_base_seconds must be a non-negative number")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")


@dataclass
class TrackResult:
    """The outcome of one `/users/track` request that Braze accepted (2xx)."""

    status_code: int
    #: Braze's per-object errors `[{type, input_array, index}]`; the rest was queued
    #: (docs/braze.md#request-and-response-format)
    errors: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1
    retries: int = 0
    #: 429 answers seen along the way
    rate_limited: int = 0
    #: an earlier attempt may have been applied too (5xx, or a timeout/read error after the
    #: request was sent); a 429 or a connect error is never applied
    possibly_duplicated: bool = False
    #: seconds spent in the pacer and in backoff
    waited_seconds: float = 0.0


@dataclass
class DeleteResult:
    """The outcome of one `/users/delete` request that Braze accepted (2xx)."""

    status_code: int
    #: users queued for deletion, as Braze counted them (`{"deleted": n}`, docs/braze.md#deleting-users)
    deleted: int = 0
    attempts: int = 1
    retries: int = 0
    rate_limited: int = 0
    possibly_duplicated: bool = False
    waited_seconds: float = 0.0


class Outcome(enum.Enum):
    """What a status code means for the caller (docs/braze.md#status-codes)."""

    SUCCESS = "success"
    RETRY = "retry"
    AUTH = "auth"
    REDIRECT = "redirect"
    PERMANENT = "permanent"


def classify_status(status_code: int) -> Outcome:
    """Classify an HTTP status: retry only 429 and 5xx, never another 4xx (docs/braze.md#status-codes)."""
    if 200 <= status_code < 300:
        return Outcome.SUCCESS
    if status_code == 429 or status_code >= 500:
        return Outcome.RETRY
    if status_code in (401, 403):
        return Outcome.AUTH
    if 300 <= status_code < 400:
        return Outcome.REDIRECT
    return Outcome.PERMANENT


@dataclass
class _Tally:
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    possibly_applied: bool = False
    waited: float = 0.0


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _object_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors = body.get("errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _generic_message(body: dict[str, Any]) -> str | None:
    message = body.get("message")
    if isinstance(message, str) and _GENERIC_MESSAGE_RE.fullmatch(message.strip()):
        return message.strip()
    return None


def _check_api_key(api_key: str) -> str:
    # Messages here describe the key's shape only, never its characters.
    key = api_key.strip() if isinstance(api_key, str) else ""
    if not key:
        raise ConfigurationError("the Braze API key is empty")
    if key[0] in "\"'" or key[-1] in "\"'":
        raise ConfigurationError("the Braze API key is wrapped in quotes; remove them (Braze answers 401)")
    if any(not 33 <= ord(ch) <= 126 for ch in key):
        raise ConfigurationError("the Braze API key contains spaces, control characters or non-ASCII characters")
    return key


class BrazeClient:
    """An async client for one Braze workspace's `/users/track` and `/users/delete`.

    Use it as an async context manager inside the task that sends::

        async with BrazeClient(endpoint, key) as braze:
            result = await braze.track(body)

    Every attempt first waits for a slot in the workspace's limiter (shared by default
    through `ratelimit.limiters`), so requests stay under Braze's limit; 429 answers
    pause that limiter for everyone.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        settings: BrazeSettings = BrazeSettings(),
        track_limiter: RateLimiter | None = None,
        delete_limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        allow_local: bool = False,
    ) -> None:
        """Validate the endpoint and key, then open (lazily) an HTTP/1.1 connection pool.

        Args:
            base_url: the workspace's REST endpoint; checked by `validate_rest_endpoint`
                before anything holds the key, so a refused endpoint never sees it.
            api_key: the workspace's REST API key (surrounding whitespace is ignored).
            settings: timeouts, retries, backoff and concurrency.
            track_limiter: pacer for `/users/track`; default: the process-wide limiter for
                this workspace at Braze's default 3,000 per 3 s.
            delete_limiter: pacer for `/users/delete`; default: 20,000 per 60 s likewise.
            transport: an httpx transport (tests pass `httpx.MockTransport`).
            allow_local: accept a local emulator endpoint (`MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS`).

        Raises:
            EndpointNotAllowed: `base_url` is not a Braze REST host.
            ConfigurationError: the key is empty, quoted or has stray characters.
        """
        self.base_url = validate_rest_endpoint(base_url, allow_local=allow_local)
        key = _check_api_key(api_key)
        self.settings = settings
        #: opaque limiter key: endpoint plus a hash of the API key
        self.workspace = workspace_key(self.base_url, key)
        self._track_limiter = track_limiter or limiters.get(
            self.workspace, TRACK_BUCKET, BRAZE.track_requests, BRAZE.track_window_seconds
        )
        self._delete_limiter = delete_limiter or limiters.get(
            self.workspace, DELETE_BUCKET, BRAZE.delete_requests, BRAZE.delete_window_seconds
        )
        is_local = not self.base_url.startswith("https://")
        base = self.base_url.rstrip("/")
        # absolute URLs, parsed once: joining base_url and path on every request was ~5% of the
        # pipeline's CPU at 400 requests/s (benchmarks/RESULTS.md)
        self._urls = {path: httpx.URL(base + path) for path in (TRACK_PATH, DELETE_PATH)}
        if transport is None:
            # Operators behind a corporate proxy reach Braze through it (a CONNECT tunnel: the
            # proxy sees the host name, never the key). A local emulator's plaintext traffic
            # never goes to a proxy.
            proxy = None if is_local else _proxy_for(self._urls[TRACK_PATH])
            transport = AiohttpTransport(settings.concurrency, trust_env=not is_local, proxy=proxy)
        # Requests go to the transport itself, not through httpx.AsyncClient: its layers (header
        # merging, cookies, auth and redirect hooks, URL joining) cost ~14% of the pipeline's
        # CPU per request and give this client nothing: one host, fixed headers, no cookies, and
        # redirects are never followed (the Authorization header would go wherever Location says).
        self._transport = transport
        self._headers = httpx.Headers(
            {
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"masivo-braze-sync/{__version__}",
            }
        )
        self._extensions = {"timeout": httpx.Timeout(settings.timeout_seconds).as_dict()}
        # Taken before the limiter so that a paced slot is used at once, not spent waiting for
        # a connection (which would bunch requests up and break the pacing bound).
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random()  # jitter only; not security-relevant

    def __repr__(self) -> str:
        return f"BrazeClient(base_url={self.base_url!r}, workspace={self.workspace!r})"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the key into wherever the bytes go (Prefect results, caches).
        raise TypeError("BrazeClient holds an API key and live connections and cannot be pickled")

    async def __aenter__(self) -> BrazeClient:
        """Enter the context; returns the client."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection pool."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools; the client cannot be used afterwards."""
        await self._transport.aclose()

    async def track(self, body: bytes) -> TrackResult:
        """POST an already-serialised `/users/track` body.

        Args:
            body: the JSON request body (`{"attributes": [...], "events": [...], "purchases": [...]}`).

        Returns:
            A `TrackResult`; Braze's per-object `errors` of a 201 are in `result.errors`.

        Raises:
            AuthenticationError: 401/403.
            PermanentError: 3xx or another 4xx (with Braze's per-object errors when given).
            RateLimited: still 429 after all retries, or Braze asked for too long a wait.
            RetryableError: 5xx, timeouts or transport errors after all retries.

            Raised errors carry `attempts` and `possibly_applied` attributes.
        """
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes (already-serialised JSON)")
        if not body:
            raise ValueError("body is empty")
        response, tally = await self._post(TRACK_PATH, body, self._track_limiter, "users.track")
        return TrackResult(
            status_code=response.status_code,
            errors=_object_errors(_json_object(response.content)),
            attempts=tally.attempts,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            possibly_duplicated=tally.possibly_applied,
            waited_seconds=tally.waited,
        )

    async def delete(self, external_ids: list[str]) -> DeleteResult:
        """Delete up to 50 users by `external_id` (docs/braze.md#deleting-users).

        Args:
            external_ids: 1 to 50 non-empty external ids (one identifier type per request).

        Returns:
            A `DeleteResult` with the number Braze queued for deletion.

        Raises:
            ValueError: no ids, more than 50, or an id that is not a non-empty string; nothing
                is sent.
            AuthenticationError, PermanentError, RateLimited, RetryableError: as for `track`.
        """
        if not external_ids:
            raise ValueError("external_ids is empty")
        if len(external_ids) > BRAZE.delete_ids_per_request:
            raise ValueError(
                f"at most {BRAZE.delete_ids_per_request} external_ids per /users/delete, got {len(external_ids)}"
            )
        if not all(isinstance(i, str) and i for i in external_ids):
            raise ValueError("every external_id must be a non-empty string")
        body = orjson.dumps({"external_ids": list(external_ids)})
        response, tally = await self._post(DELETE_PATH, body, self._delete_limiter, "users.delete")
        deleted = _json_object(response.content).get("deleted")
        return DeleteResult(
            status_code=response.status_code,
            deleted=deleted if isinstance(deleted, int) and not isinstance(deleted, bool) else 0,
            attempts=tally.attempts,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            possibly_duplicated=tally.possibly_applied,
            waited_seconds=tally.waited,
        )

    # -- the retry loop ----------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this BrazeClient was first used on another event loop; create one client per loop "
                "(e.g. inside the async task), its connections cannot move between loops"
            )

    async def _send(self, path: str, body: bytes) -> httpx.Response:
        """One POST on the transport; the response is read in full and its connection freed."""
        request = httpx.Request(
            "POST", self._urls[path], headers=self._headers, content=body, extensions=self._extensions
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _backoff(self, retry: int) -> float:
        cap = min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2.0**retry)
        return self._random.uniform(0.0, cap)

    async def _post(
        self, path: str, body: bytes, limiter: RateLimiter, permission: str
    ) -> tuple[httpx.Response, _Tally]:
        """Send with pacing and retries; return the 2xx response or raise a classified error."""
        self._bind_loop()
        tally = _Tally()
        while True:
            tally.attempts += 1
            response: httpx.Response | None = None
            error: httpx.TransportError | None = None
            async with self._semaphore:
                tally.waited += await limiter.acquire()
                try:
                    response = await self._send(path, body)
                except httpx.TransportError as exc:  # includes every httpx.TimeoutException
                    error = exc
                    if not isinstance(exc, _NOT_SENT):
                        tally.possibly_applied = True
                finally:
                    limiter.settle()

            asked: float | None = None  # the wait Braze asked for, if it did
            if response is not None:
                info = parse_rate_limit_headers(response.headers)
                limiter.observe(limit=info.limit, remaining=info.remaining, reset_in=info.reset_in)
                outcome = classify_status(response.status_code)
                if outcome is Outcome.SUCCESS:
                    return response, tally
                if outcome is not Outcome.RETRY:
                    raise self._annotate(self._fatal(response, outcome, path, permission), tally)
                asked = self._asked_wait(response.status_code, info)
                if response.status_code == 429:
                    tally.rate_limited += 1  # a 429 was refused before processing: never applied
                else:
                    tally.possibly_applied = True  # a 5xx may come after the write (docs/braze.md#status-codes)

            is_429 = response is not None and response.status_code == 429
            if asked is not None and asked > self.settings.max_retry_wait_seconds:
                limiter.pause_for(self.settings.max_retry_wait_seconds if is_429 else 0.0)
                raise self._annotate(self._too_long(path, response, asked), tally) from error
            if tally.retries >= self.settings.max_retries:
                raise self._annotate(self._exhausted(path, response, error, tally, asked), tally) from error

            delay = asked if asked is not None and asked > 0 else self._backoff(tally.retries)
            if is_429:
                # The budget is the workspace's, not this request's: hold every sender back.
                limiter.pause_for(delay)
            tally.retries += 1
            await asyncio.sleep(delay)
            tally.waited += delay

    @staticmethod
    def _asked_wait(status_code: int, info: RateLimitHeaders) -> float | None:
        """The wait the response asked for: retry-after, else (429 only) the window reset.

        docs/braze.md#rate-limit-headers
        """
        if info.retry_after is not None:
            return info.retry_after
        if status_code == 429 and info.reset_in is not None:
            return info.reset_in
        return None  # a 5xx's reset header is about the window, not about the failure

    @staticmethod
    def _annotate(exc: SyncError, tally: _Tally) -> SyncError:
        # Extra attributes survive pickling (errors.SyncError.__reduce__ keeps __dict__).
        exc.attempts = tally.attempts  # type: ignore[attr-defined]
        exc.possibly_applied = tally.possibly_applied  # type: ignore[attr-defined]
        return exc

    @staticmethod
    def _fatal(response: httpx.Response, outcome: Outcome, path: str, permission: str) -> SyncError:
        status = response.status_code
        if outcome is Outcome.AUTH:
            if status == 401:
                detail = "check the key and that the REST endpoint is the workspace's instance"
            else:
                detail = f"the key lacks the {permission} permission, or the workspace's plan does not allow it"
            return AuthenticationError(
                f"Braze refused the API key for this workspace ({status}): {detail}", status_code=status
            )
        if outcome is Outcome.REDIRECT:
            return PermanentError(
                f"Braze answered {path} with a redirect (HTTP {status}); redirects are never followed so the "
                "API key cannot be forwarded: check the REST endpoint",
                status_code=status,
            )
        body = _json_object(response.content)
        errors = _object_errors(body)
        message = f"Braze rejected {path} with HTTP {status}"
        generic = _generic_message(body)
        if generic:
            message += f": {generic}"
        if errors:
            message += f" ({len(errors)} object error(s))"
        return PermanentError(message, status_code=status, errors=errors)

    def _too_long(self, path: str, response: httpx.Response | None, asked: float) -> RetryableError:
        status = response.status_code if response is not None else None
        cls = RateLimited if status == 429 else RetryableError
        return cls(
            f"Braze asked to wait {asked:.0f} s before retrying {path} (HTTP {status}), more than "
            f"max_retry_wait_seconds ({self.settings.max_retry_wait_seconds:.0f} s); "
            "giving up so the run can be rescheduled",
            status_code=status,
            retry_after=asked,
        )

    @staticmethod
    def _exhausted(
        path: str,
        response: httpx.Response | None,
        error: httpx.TransportError | None,
        tally: _Tally,
        asked: float | None,
    ) -> RetryableError:
        if response is not None and response.status_code == 429:
            return RateLimited(
                f"Braze {path} still rate limited (HTTP 429) after {tally.attempts} attempts",
                status_code=429,
                retry_after=asked,
            )
        last = f"HTTP {response.status_code}" if response is not None else type(error).__name__
        return RetryableError(
            f"Braze {path} still failing after {tally.attempts} attempts (last: {last})",
            status_code=response.status_code if response is not None else None,
            retry_after=asked,
        )
