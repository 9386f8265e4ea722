"""Running the emulator: uvicorn (h11) on loopback, in a background thread or blocking.

The listening socket is bound here, before uvicorn starts, so port 0 works and `url` is known
at once. uvicorn is configured not to touch logging (`log_config=None`) and to skip access logs,
proxy-header rewriting and the `server` header: less work per request and no side effects on
the host process's logging.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from masivo_braze_sync.emulator.app import EmulatorApp, create_app
from masivo_braze_sync.emulator.state import EmulatorState

__all__ = ["EmulatorServer", "serve"]

_START_TIMEOUT = 10.0


def _check_loopback(host: str) -> None:
    # The admin API has no authentication, so the emulator must never listen beyond this machine.
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the Braze emulator only binds loopback addresses, not {host!r}")


def _bind(host: str, port: int) -> socket.socket:
    _check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it the response body (uvicorn's second write) waits ~40 ms for the
    # client's delayed ACK of the headers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: EmulatorApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        loop="asyncio",
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        # generous backlog: benchmarks open many client connections at once
        backlog=4096,
        timeout_keep_alive=30,
        # sleeps are woken on stop(); this only bounds a request stuck elsewhere
        timeout_graceful_shutdown=3,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmulatorServer:
    """The emulator served by uvicorn in a background thread.

    Use as a context manager, or call `start()` / `stop()`. `start()` returns once the port
    accepts connections; `stop()` ends in-flight fault sleeps and waits for the thread.
    """

    def __init__(
        self,
        state: EmulatorState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
    ) -> None:
        _check_loopback(host)
        self.state = state if state is not None else EmulatorState()
        self.host = host
        self._requested_port = port
        self._log_level = log_level
        self._port: int | None = None
        self._app: EmulatorApp | None = None
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:54321"."""
        return _url(self.host, self.port)

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> EmulatorServer:
        """Start serving; returns once connections are accepted."""
        if self.running:
            raise RuntimeError("the emulator is already running")
        sock = _bind(self.host, self._requested_port)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._app = create_app(self.state)
        self._server = uvicorn.Server(_config(self._app, self.host, self._port, self._log_level))
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"braze-emulator-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Braze emulator did not start: {self._error!r}")
            time.sleep(0.005)
        # `started` is set after listen(); one probe connection makes the promise explicit
        with socket.create_connection((self.host, self._port), timeout=_START_TIMEOUT):
            pass
        return self

    def _run(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - the thread has no caller; start() reports it
            self._error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        server, thread = self._server, self._thread
        if self._app is not None:
            self._app.wake_sleepers()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = self._app = None
        self._port = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    state: EmulatorState | None = None,
    host: str = "127.0.0.1",
    port: int = 9000,
    *,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the emulator in the foreground until SIGINT/SIGTERM (the CLI's entry point).

    `on_ready(url)` is called once connections are accepted; by default the URL is printed to
    stderr. Workspaces can be added through `state` or the admin API
    (`POST /_emulator/workspaces`).
    """
    state = state if state is not None else EmulatorState()
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1])
    server = uvicorn.Server(_config(create_app(state), host, sock.getsockname()[1], log_level))
    ready = on_ready or (lambda u: print(f"Braze emulator listening on {u}", file=sys.stderr, flush=True))

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            ready(url)
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        # uvicorn re-raises the captured SIGINT after its graceful shutdown; Ctrl-C is a normal exit
        pass
    finally:
        sock.close()
