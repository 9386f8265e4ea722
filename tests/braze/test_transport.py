"""The client's wire (aiohttp under httpx) against raw sockets: what reaches the server, and
which failures may have applied a request.

The ledger trusts "never sent" only for failures before the request left; each case here is a
real socket doing what a network or a server can do.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from masivo_braze_sync.braze import BrazeClient, BrazeSettings, RateLimiter
from masivo_braze_sync.errors import PermanentError, RetryableError

KEY = "transport-key-0001"
BODY = b'{"events":[{"external_id":"c1","name":"visit","time":"2026-11-30T10:00:00Z"}]}'
SETTINGS = BrazeSettings(timeout_seconds=0.5, max_retries=1, backoff_base_seconds=0.0, backoff_max_seconds=0.01)
OK = b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{"message":"success"}'

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


async def _track(serve: Serve) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Send BODY to a server answering with `serve`; return the connections seen and requests read."""
    seen: list[tuple[bytes, bytes]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await serve(reader, writer)
        finally:
            writer.close()

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle(_Recorder(reader, seen), writer)  # type: ignore[arg-type]

    server = await asyncio.start_server(recording, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with BrazeClient(
            f"http://127.0.0.1:{port}", KEY, settings=SETTINGS, track_limiter=RateLimiter(10_000, 1.0), allow_local=True
        ) as client:
            await client.track(BODY)
    finally:
        server.close()
    return connections, seen


class _Recorder:
    """A reader that records each whole request its server reads."""

    def __init__(self, reader: asyncio.StreamReader, seen: list[tuple[bytes, bytes]]) -> None:
        self._reader, self._seen = reader, seen

    async def request(self) -> tuple[bytes, bytes]:
        head, body = await _read_request(self._reader)
        self._seen.append((head, body))
        return head, body


async def _answer_ok(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
    await reader.request()
    writer.write(OK)
    await writer.drain()


def test_the_request_on_the_wire_is_the_clients_bytes_with_each_header_once():
    connections, seen = asyncio.run(_track(_answer_ok))  # type: ignore[arg-type]
    assert connections == 1
    assert len(seen) == 1
    head, body = seen[0]
    assert body == BODY
    lines = [line.lower() for line in head.split(b"\r\n")[1:] if line]
    names = [line.split(b":", 1)[0] for line in lines]
    assert sorted(names) == sorted(set(names)), "a header sent twice"
    assert f"authorization: bearer {KEY}".encode() in lines
    assert f"content-length: {len(BODY)}".encode() in lines
    assert b"accept-encoding" not in names  # answers stay uncompressed, as Braze sent them


def test_a_refused_connection_was_never_sent():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> None:
        async with BrazeClient(
            f"http://127.0.0.1:{port}", KEY, settings=SETTINGS, track_limiter=RateLimiter(10_000, 1.0), allow_local=True
        ) as client:
            await client.track(BODY)

    with pytest.raises(RetryableError, match="ConnectError") as info:
        asyncio.run(go())
    assert info.value.possibly_applied is False  # type: ignore[attr-defined]


async def _read_then_hang_up(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
    await reader.request()  # Braze may have applied it: then the connection drops


async def _read_then_stay_silent(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
    await reader.request()
    await asyncio.sleep(SETTINGS.timeout_seconds * 3)


@pytest.mark.parametrize(
    ("serve", "error"),
    [(_read_then_hang_up, "RemoteProtocolError"), (_read_then_stay_silent, "ReadTimeout")],
    ids=["hang-up", "read-timeout"],
)
def test_a_request_the_server_read_may_have_been_applied(serve: Serve, error: str):
    with pytest.raises(RetryableError, match=error) as info:
        asyncio.run(_track(serve))
    assert info.value.possibly_applied is True  # type: ignore[attr-defined]
    assert info.value.attempts == 2  # type: ignore[attr-defined]


def test_a_redirect_is_not_followed():
    async def redirect(reader: _Recorder, writer: asyncio.StreamWriter) -> None:
        await reader.request()
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    with pytest.raises(PermanentError, match="redirects are never followed"):
        asyncio.run(_track(redirect))  # type: ignore[arg-type]
