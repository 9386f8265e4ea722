"""Starting and stopping the server: port 0, readiness, clean and quick shutdown, loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from masivo_braze_sync.emulator import EmulatorServer, EmulatorState, Fault, Workspace


def test_start_stop_many_times_on_fresh_ports() -> None:
    state = EmulatorState()
    state.add_workspace(Workspace(name="s", api_key="k"))
    started = time.monotonic()
    for i in range(5):
        server = EmulatorServer(state, host="127.0.0.1", port=0)
        server.start()
        port = server.port
        # ready means accepting: the very first request succeeds
        body = {"attributes": [{"external_id": f"c{i}"}]}
        r = httpx.post(f"{server.url}/users/track", json=body, headers={"Authorization": "Bearer k"})
        assert r.status_code == 201
        server.stop()
        server.stop()  # idempotent
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    assert time.monotonic() - started < 5
    assert len(state.profiles("s")) == 5


def test_context_manager_and_url() -> None:
    with EmulatorServer(EmulatorState()) as server:
        assert server.running
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/_emulator/workspaces").json() == {"workspaces": []}
    assert not server.running
    with pytest.raises(RuntimeError):
        _ = server.url


def test_restart_the_same_object() -> None:
    server = EmulatorServer(EmulatorState())
    for _ in range(2):
        with server:
            assert httpx.get(f"{server.url}/_emulator/workspaces").status_code == 200


def test_stop_does_not_wait_for_a_pending_timeout_fault() -> None:
    state = EmulatorState()
    state.add_workspace(Workspace(name="s", api_key="k"))
    state.add_fault(Fault(kind="timeout", delay_seconds=30))
    server = EmulatorServer(state).start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            httpx.post(f"{server.url}/users/track", json={}, headers={"Authorization": "Bearer k"}, timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)  # the request is now sleeping in the server
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    t.join(5)
    assert not t.is_alive()


def test_latency_is_added_to_every_request() -> None:
    state = EmulatorState()
    state.add_workspace(Workspace(name="s", api_key="k", latency_seconds=0.1))
    with EmulatorServer(state) as server, httpx.Client(headers={"Authorization": "Bearer k"}) as c:
        started = time.monotonic()
        for _ in range(3):
            c.post(f"{server.url}/users/track", json={"attributes": [{"external_id": "c1"}]})
        assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_only_loopback_is_allowed(host) -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmulatorServer(EmulatorState(), host=host)


def test_occupied_port_fails_to_start() -> None:
    with EmulatorServer(EmulatorState()) as first, pytest.raises(OSError, match="in use"):
        EmulatorServer(EmulatorState(), port=first.port).start()


def test_serve_blocks_until_interrupted() -> None:
    code = (
        "import sys\n"
        "from masivo_braze_sync.emulator import EmulatorState, Workspace, serve\n"
        "state = EmulatorState()\n"
        "state.add_workspace(Workspace(name='cli', api_key='k'))\n"
        "serve(state, host='127.0.0.1', port=0, on_ready=lambda url: print(url, flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        r = httpx.post(
            f"{url}/users/track",
            json={"attributes": [{"external_id": "c1"}]},
            headers={"Authorization": "Bearer k"},
        )
        assert r.status_code == 201
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
