"""Endpoints, end to end: an account whose REST endpoint only looks like Braze fails with a clear
configuration error before its key goes anywhere, and a redirect is never followed; either way
its changes wait, and go once the endpoint is fixed.

The allow-list itself is unit-tested in tests/braze/test_endpoints.py, the client's refusal to
follow redirects in tests/braze/test_client.py; here it is the whole pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from masivo_braze_sync.errors import ConfigurationError
from tests.reliability.helpers import backlog

KEY = "brz-ENDPOINTKEY-3e5f7a9b"


@pytest.fixture
def http_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL any httpx client of this process tries to reach."""
    calls: list[str] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def spy(self, request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", spy)
    return calls


def _account(make_account, add_events, emulator, endpoint: str) -> list[str]:
    from masivo_braze_sync.emulator import Workspace

    make_account("acct-1", customers=1, endpoint=endpoint, api_key=KEY)
    emulator.add_workspace(Workspace(name="acct-1", api_key=KEY))
    return add_events("acct-1", 150)


LOOK_ALIKES = [
    "https://rest.iad-01.braze.com.evil.example",
    "https://rest.iad-01.braze.com@evil.example",
    "http://rest.iad-01.braze.com",
    "https://18.205.113.20",
    "https://[2600:1f18::1]",
    "https://rest.iad-01.braze.com:8443",
]


@pytest.mark.parametrize("endpoint", LOOK_ALIKES)
def test_a_look_alike_endpoint_fails_the_account_before_the_key_goes_anywhere(
    endpoint, make_account, add_events, emulator, run_sync, http_calls, db, emulator_url
) -> None:
    ids = _account(make_account, add_events, emulator, endpoint)
    with pytest.raises(ConfigurationError) as info:
        run_sync("acct-1")
    message = str(info.value)
    assert message.startswith("account acct-1: Braze REST endpoint refused")
    assert "Accepted: https://rest.<instance>.braze.com" in message
    assert KEY not in message
    assert http_calls == []  # no connection was even attempted
    assert backlog(db, "acct-1", "events") == len(ids)  # nothing consumed, nothing rejected

    with db.connection() as conn:  # the operator fixes the endpoint: everything goes
        conn.execute("UPDATE braze_integrations SET rest_endpoint = %s", (emulator_url,))
    assert run_sync("acct-1").objects_sent == len(ids)


def test_the_emulator_itself_is_refused_without_the_explicit_setting(
    make_account, add_events, emulator, run_sync, http_calls, emulator_url, settings_env
) -> None:
    settings_env(BRAZE_ALLOW_LOCAL_ENDPOINTS=0)
    _account(make_account, add_events, emulator, emulator_url)
    with pytest.raises(ConfigurationError, match="MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS"):
        run_sync("acct-1")
    assert http_calls == []


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST with `answer(handler)`; records the Authorization header it saw."""

    seen: list[tuple[str, str | None]]
    location: str | None = None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.seen.append((self.path, self.headers.get("authorization")))
        if self.location:
            self.send_response(307)
            self.send_header("location", self.location)
        else:
            self.send_response(201)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _serve(location: str | None) -> tuple[ThreadingHTTPServer, list]:
    seen: list = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "location": location})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list, list]]:
    """(endpoint URL, requests it saw, requests the redirect target saw)."""
    trap, trapped = _serve(None)
    target = f"http://127.0.0.1:{trap.server_address[1]}/users/track"
    front, seen = _serve(target)
    yield f"http://127.0.0.1:{front.server_address[1]}", seen, trapped
    for server in (front, trap):
        server.shutdown()
        server.server_close()


def test_a_redirect_is_never_followed_fails_the_account_and_loses_nothing(
    redirecting, make_account, add_events, emulator, run_sync, db, emulator_url
) -> None:
    endpoint, seen, trapped = redirecting
    ids = _account(make_account, add_events, emulator, endpoint)
    with pytest.raises(ConfigurationError, match="redirects are never followed") as info:
        run_sync("acct-1")
    assert KEY not in str(info.value)
    assert seen  # the configured endpoint was asked, with the key: it is the account's own setting
    assert trapped == []  # the host it pointed to never saw a request, let alone the key

    # not the rows' fault: none is rejected, the batch stays open, and it goes once fixed
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.rejected_rows").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM braze_sync.cursors").fetchone()[0] == 0
        conn.execute("UPDATE braze_integrations SET rest_endpoint = %s", (emulator_url,))
    assert run_sync("acct-1").objects_sent == len(ids)
    assert backlog(db, "acct-1", "events") == 0
