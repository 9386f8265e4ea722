"""Fixtures: one emulator server per session (starting uvicorn costs ~50 ms), a fresh state per
test, a clock tests can freeze, and a helper to add workspaces with unique keys."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from masivo_braze_sync.emulator import EmulatorServer, EmulatorState, Workspace


class Clock:
    """`time.time()`, unless a test pins it with `set()` (rate-limit windows become exact)."""

    def __init__(self) -> None:
        self.fixed: float | None = None

    def __call__(self) -> float:
        return time.time() if self.fixed is None else self.fixed

    def set(self, value: float) -> None:
        self.fixed = value

    def advance(self, seconds: float) -> None:
        assert self.fixed is not None
        self.fixed += seconds


_CLOCK = Clock()
_STATE = EmulatorState(clock=_CLOCK)
_names = itertools.count(1)


@pytest.fixture(scope="session")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(_STATE, host="127.0.0.1", port=0) as srv:
        yield srv


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield _CLOCK
    _CLOCK.fixed = None


@pytest.fixture
def state(server: EmulatorServer) -> Iterator[EmulatorState]:
    _STATE.reset()
    yield _STATE
    _STATE.reset()
    _CLOCK.fixed = None


@pytest.fixture
def base_url(server: EmulatorServer) -> str:
    return server.url


@pytest.fixture
def make_ws(state: EmulatorState) -> Callable[..., Workspace]:
    """Add a workspace with a unique name and key; keyword arguments override fields."""

    def make(**overrides: object) -> Workspace:
        n = next(_names)
        fields: dict = {"name": f"acct-{n}", "api_key": f"key-{n}"} | overrides
        ws = Workspace(**fields)
        state.add_workspace(ws)
        return ws

    return make


@pytest.fixture
def ws(make_ws: Callable[..., Workspace]) -> Workspace:
    return make_ws()


@pytest.fixture(scope="session")
def transport() -> Iterator[httpx.HTTPTransport]:
    """One connection pool for the session: building an httpx client's SSL context per test
    would cost more than the tests themselves."""
    with httpx.HTTPTransport() as t:
        yield t


@pytest.fixture
def http(base_url: str, transport: httpx.HTTPTransport) -> Callable[..., httpx.Client]:
    """Make a client on the shared pool: `http(api_key=...)`. Not closed: that would close the pool."""

    def make(api_key: str | None = None, timeout: float = 5.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
        return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    return make


@pytest.fixture
def client(http: Callable[..., httpx.Client], ws: Workspace) -> httpx.Client:
    """A client authenticated as `ws`."""
    return http(ws.api_key)


@pytest.fixture
def anon(http: Callable[..., httpx.Client]) -> httpx.Client:
    """A client without credentials (admin API, auth failures)."""
    return http()
