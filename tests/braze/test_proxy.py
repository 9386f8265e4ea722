"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY reach the client's own (sharded) transport.

A tiny proxy on loopback records what it is asked and refuses every tunnel, so no test needs the
network: reaching Braze through the proxy shows up as the proxy's CONNECT log.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from masivo_braze_sync.braze import BrazeClient, BrazeSettings, RateLimiter
from masivo_braze_sync.errors import RetryableError

BRAZE = "https://rest.iad-01.braze.com"
KEY = "proxy-test-key-0001"
NO_RETRIES = BrazeSettings(max_retries=0, timeout_seconds=5)


class RefusingProxy:
    """Accepts connections, records each request head, answers 403 and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.heads: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.decode("latin-1"))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy() -> Iterator[RefusingProxy]:
    p = RefusingProxy()
    yield p
    p.close()


def post(base_url: str, *, allow_local: bool = False) -> int:
    async def go() -> int:
        limiter = RateLimiter(1000, 1.0)
        async with BrazeClient(
            base_url, KEY, settings=NO_RETRIES, track_limiter=limiter, allow_local=allow_local
        ) as client:
            return (await client.track(b'{"attributes": [{"external_id": "c1", "n": 1}]}')).status_code

    return asyncio.run(go())


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
def test_requests_to_braze_go_through_the_proxy(proxy, monkeypatch, variable):
    monkeypatch.setenv(variable, proxy.url)
    with pytest.raises(RetryableError):  # the proxy refuses the tunnel
        post(BRAZE)
    assert len(proxy.heads) == 1
    head = proxy.heads[0]
    assert head.startswith("CONNECT rest.iad-01.braze.com:443 ")
    assert KEY not in head  # the key only travels inside the TLS tunnel


@pytest.mark.parametrize("no_proxy", ["rest.iad-01.braze.com", ".braze.com", "braze.com", "example.org, *"])
def test_no_proxy_sends_directly(proxy, monkeypatch, no_proxy):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with pytest.raises(RetryableError):  # no network here: the direct connection fails
        post(BRAZE)
    assert proxy.heads == []


def test_no_proxy_for_other_hosts_keeps_the_proxy(proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.org,10.0.0.1")
    with pytest.raises(RetryableError):
        post(BRAZE)
    assert len(proxy.heads) == 1


def test_a_local_emulator_never_goes_through_a_proxy(proxy, monkeypatch, emulator, emulator_url):
    from masivo_braze_sync.emulator import Workspace

    emulator.add_workspace(Workspace(name="proxy-ws", api_key=KEY))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    assert post(emulator_url, allow_local=True) == 201
    assert proxy.heads == []
