"""The client's wire: an httpx transport that sends on aiohttp's connection pool.

`BrazeClient` speaks httpx (`httpx.Request`, `httpx.Response`, httpx's exception types) and tests
inject `httpx.MockTransport`; only the bytes on the wire go through aiohttp, whose HTTP/1.1 parser
and connection pool are written in C. Side by side against one loopback server (64 requests in
flight, 20 KB bodies), httpx's own transport (httpcore, h11 and anyio over asyncio) cost ~1.4 ms of
CPU per request and this one ~0.36 ms (benchmarks/RESULTS.md, "the HTTP transport").

What the client's ledger relies on is the exception mapping: an error means "never sent" (and a
retry cannot duplicate anything) only if it happened before a byte of the request left, that is
while connecting (`_NOT_SENT` in client.py). Every aiohttp error raised after the connection was
made maps to an httpx error outside that group, and anything unrecognised to the generic
`httpx.TransportError`, which also counts as "may have been applied".
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any

import aiohttp
import httpx

#: aiohttp adds `Accept-Encoding: gzip, deflate` by default; Braze's answers are small, and an
#: uncompressed body keeps what the client reads exactly what Braze sent
_SKIP_AUTO_HEADERS = ("Accept-Encoding",)
#: computed by aiohttp from the body and URL: passing httpx's copies too would send them twice
_AUTO_HEADERS = frozenset({"content-length", "host"})


@functools.cache
def ssl_context(trust_env: bool) -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs ~75 ms of CPU on a slow core."""
    return httpx.create_ssl_context(trust_env=trust_env)


def _mapped(exc: BaseException) -> httpx.TransportError:
    """The httpx error for an aiohttp one, keeping the "never sent" distinction exact."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (aiohttp.ClientHttpProxyError, aiohttp.ClientProxyConnectionError)):
        return httpx.ProxyError(message)  # the proxy refused or could not reach Braze: nothing sent
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)  # no connection (or none free in the pool) in time
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)  # DNS, refused, TLS handshake: before the request
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message)  # sent, no answer in time: it may have been applied
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message)
    return httpx.TransportError(message)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Up to `connections` keep-alive HTTP/1.1 connections, opened as needed.

    Honours the request's timeouts (`connect`, `pool`, `read`; aiohttp has no write timeout)
    and never follows redirects. A proxy, when given, is used for every request (a CONNECT
    tunnel for HTTPS). The session is created on the first request, inside the event loop that
    will use it, and belongs to that loop, like the client that owns the transport.
    """

    def __init__(self, connections: int, *, trust_env: bool = True, proxy: str | None = None) -> None:
        self._connections = connections
        self._trust_env = trust_env
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    def _open(self, url: httpx.URL) -> aiohttp.ClientSession:
        # plaintext (a local emulator) needs no CA bundle; aiohttp's default stays for anything else
        tls = ssl_context(self._trust_env) if url.scheme == "https" or self._proxy else True
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, ssl=tls)
        # trust_env=False: the proxy is chosen by the client (`_proxy_for`), not read again here
        return aiohttp.ClientSession(connector=connector, trust_env=False, skip_auto_headers=_SKIP_AUTO_HEADERS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response with its body read in full."""
        session = self._session
        if session is None:
            session = self._session = self._open(request.url)
        timeout = request.extensions.get("timeout", {})
        headers = {k: v for k, v in request.headers.items() if k not in _AUTO_HEADERS}
        try:
            async with session.request(
                request.method,
                str(request.url),
                data=request.content or None,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
                timeout=_timeout(timeout.get("connect"), timeout.get("pool"), timeout.get("read")),
            ) as answer:
                content = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _mapped(exc) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        return httpx.Response(answer.status, headers=answer.raw_headers, content=content, extensions=extensions)

    async def aclose(self) -> None:
        """Close every connection."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


@functools.lru_cache(maxsize=16)
def _timeout(connect: float | None, pool: float | None, read: float | None) -> aiohttp.ClientTimeout:
    # aiohttp's `connect` covers waiting for a free connection and making one; `sock_connect`
    # the connection alone; `sock_read` the wait for each piece of the answer
    waits = [t for t in (connect, pool) if t is not None]
    return aiohttp.ClientTimeout(
        total=None, connect=sum(waits) if waits else None, sock_connect=connect, sock_read=read
    )
