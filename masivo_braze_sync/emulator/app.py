"""The emulator's ASGI application: Braze's two ingestion endpoints plus an admin API.

A bare ASGI callable rather than a framework router: the hot path (about 1,000 requests per
second in benchmarks) is one dict lookup for the route, one header scan for the key, orjson in
and out, and three short critical sections in `EmulatorState`. It also never redirects (a
framework would turn `/users/track/` into a 307), which Braze does not do either.

Request flow for `POST /users/track` and `POST /users/delete`:
route (404) -> method (405) -> body read (413 over 4 MB) -> key (401) -> permission (403)
-> workspace latency -> rate limit (429, counted) -> injected fault -> parse (400)
-> validate (400 / 201 with errors) -> apply -> 201.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any
from urllib.parse import unquote

import orjson

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.emulator.state import (
    DELETE_PATH,
    TRACK_PATH,
    Admission,
    EmulatorState,
    Fault,
    Workspace,
)
from masivo_braze_sync.emulator.validation import (
    ARRAYS,
    MSG_BAD_REQUEST,
    MSG_NO_VALID,
    Fatal,
    check_delete,
    check_track,
)

__all__ = ["EmulatorApp", "create_app"]


MAX_BODY_BYTES = BRAZE.request_bytes  # docs/braze.md#limits: 413 above it
ADMIN_PREFIX = "/_emulator/"
_ROUTES = {TRACK_PATH: "users.track", DELETE_PATH: "users.delete"}
_JSON = (b"content-type", b"application/json")
_ALLOW_POST = [(b"allow", b"POST")]
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


async def _respond(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = _dumps(payload)
    h = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes | None:
    """The request body, or None if the client left or it exceeds MAX_BODY_BYTES."""
    msg = await receive()
    if msg["type"] != "http.request":
        return None
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    chunks, size = [body], len(body)
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        part = msg.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(part)
        if not msg.get("more_body"):
            return b"".join(chunks)


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.partition(b" ")
            if scheme.lower() != b"bearer" or not key:
                return None
            # no stripping or unquoting: Braze answers 401 to a quoted key (docs/braze.md#endpoints-and-instances)
            return key.decode("latin-1")
    return None


class EmulatorApp:
    """ASGI app serving one `EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleepers: set[asyncio.Future] = set()
        self._closing = False

    # Sleeping that shutdown can cut short -------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless the server is stopping (so a 30 s timeout fault never delays stop())."""
        if self._closing or seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut = loop.create_future()
        handle = loop.call_later(seconds, lambda: fut.done() or fut.set_result(None))
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._sleepers.discard(fut)

    def _wake_all(self) -> None:
        for fut in list(self._sleepers):
            if not fut.done():
                fut.set_result(None)

    def wake_sleepers(self) -> None:
        """Thread-safe: end every pending sleep now and skip future ones (server stopping)."""
        self._closing = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(self._wake_all)

    # ASGI entry point ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI 3 entry point."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        self._loop = asyncio.get_running_loop()
        path = scope["path"]
        permission = _ROUTES.get(path)
        if permission is None:
            if path.startswith(ADMIN_PREFIX):
                await self._admin(scope, receive, send)
            else:
                await _respond(send, 404, {"message": "Not Found"})
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"message": "Method Not Allowed"}, _ALLOW_POST)
            return
        raw = await _read_body(receive)
        if raw is None:
            await _respond(send, 413, {"message": "Payload Too Large"})
            return
        key = _bearer(scope)
        ws = self.state.workspace_for_key(key) if key is not None else None
        if ws is None:
            # never echo the key: it is a secret even when wrong
            await _respond(send, 401, {"message": "Invalid API key: the key is missing or not recognised"})
            return
        if permission not in ws.permissions:
            self.state.record_status(ws.name, 403, path=path)
            await _respond(send, 403, {"message": "Access Denied"})
            return
        if ws.latency_seconds:
            await self._sleep(ws.latency_seconds)
        admission = self.state.admit(ws.name, path)
        if not admission.allowed:
            self.state.record_status(ws.name, 429)
            await _respond(send, 429, {"message": "Rate Limit Exceeded"}, admission.limited_headers())
            return
        fault = self.state.take_fault(ws.name, path)
        if fault is not None and fault.kind != "applied_then_500":
            await self._fault(fault, ws, path, admission, send)
            return
        status, payload = self._handle(ws, path, raw)
        if fault is not None:  # applied_then_500: the work is done, the answer is lost
            status, payload = 500, {"message": "Internal Server Error"}
        self.state.record_status(ws.name, status)
        await _respond(send, status, payload, admission.headers())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # Braze endpoints ----------------------------------------------------------------------

    def _handle(self, ws: Workspace, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Parse, validate and apply; returns (status, body)."""
        try:
            body = orjson.loads(raw)  # strict JSON: NaN / Infinity tokens are rejected
        except orjson.JSONDecodeError:
            return 400, {"message": MSG_BAD_REQUEST}
        if path == DELETE_PATH:
            checked = check_delete(body, max_ids=ws.max_delete_ids)
            if isinstance(checked, Fatal):
                return checked.status, checked.body
            deleted = self.state.apply_delete(ws.name, *checked)
            return 201, {"deleted": deleted, "message": "success"}
        plan = check_track(body, max_objects=ws.max_objects, batch_mode=ws.batch_mode)
        if isinstance(plan, Fatal):
            return plan.status, plan.body
        self.state.apply_track(ws.name, plan)
        if not plan.any_valid:
            return 400, {"message": MSG_NO_VALID, "errors": plan.errors}
        out: dict[str, Any] = {"message": "success"}
        for name in ARRAYS:
            if name in plan.valid:
                out[f"{name}_processed"] = len(plan.valid[name])
        if plan.errors:
            out["errors"] = plan.errors
        return 201, out

    async def _fault(self, fault: Fault, ws: Workspace, path: str, admission: Admission, send: Any) -> None:
        """Answer (or not) as the fault says; nothing is applied."""
        if fault.kind == "status":
            self.state.record_status(ws.name, fault.status)
            await _respond(send, fault.status, {"message": "Injected failure"}, admission.headers())
        elif fault.kind == "rate_limit":
            self.state.record_status(ws.name, 429)
            limited = self.state.peek(ws.name, path).limited_headers()
            await _respond(send, 429, {"message": "Rate Limit Exceeded"}, limited)
        elif fault.kind == "timeout":
            await self._sleep(fault.delay_seconds)
            self.state.record_status(ws.name, 504)
            await _respond(send, 504, {"message": "Gateway Timeout"}, admission.headers())
        else:  # reset
            if not await self._drop_connection(send):
                # Fallback when the server is not uvicorn's h11/httptools protocol: promise a
                # body and close before sending it, so the client still sees a broken response.
                start = [_JSON, (b"content-length", b"1024")]
                await send({"type": "http.response.start", "status": 500, "headers": start})
                await send({"type": "http.response.body", "body": b"{", "more_body": True})

    @staticmethod
    async def _drop_connection(send: Any) -> bool:
        """Reset the TCP connection without an HTTP response.

        ASGI has no "abort" message, so this reaches the transport through uvicorn's
        RequestResponseCycle (`send` is its bound method). SO_LINGER 0 turns the close into a
        RST. Returns False if the transport is not reachable.
        """
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()
        # Let connection_lost run first: it marks the cycle disconnected, so uvicorn does not
        # log "returned without starting response" or try to send a 500.
        await asyncio.sleep(0)
        return True

    # Admin API (no auth: the server only binds loopback) ----------------------------------

    async def _admin(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        # split the raw path so ids containing "/" (percent-encoded) survive
        raw_path = scope.get("raw_path") or scope["path"].encode()
        parts = [unquote(p) for p in raw_path.decode("latin-1")[len(ADMIN_PREFIX) :].split("/")]
        raw = await _read_body(receive)
        if raw is None:
            await _respond(send, 413, {"message": "Payload Too Large"})
            return
        try:
            status, payload = self._admin_route(method, parts, raw)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            status, payload = 400, {"message": str(exc)}
        except KeyError as exc:
            status, payload = 404, {"message": str(exc.args[0]) if exc.args else "Not Found"}
        await _respond(send, status, payload)

    def _admin_route(self, method: str, parts: list[str], raw: bytes) -> tuple[int, Any]:
        st = self.state
        if parts == ["workspaces"]:
            if method == "POST":
                ws = Workspace.from_dict(_object(raw))
                st.add_workspace(ws)
                return 201, {"name": ws.name}
            if method == "GET":
                return 200, {"workspaces": sorted(st.workspaces())}
        elif parts == ["faults"]:
            if method == "POST":
                data = orjson.loads(raw)
                items = data if isinstance(data, list) else [data]
                faults = [Fault.from_dict(_as_object(d)) for d in items]
                for f in faults:
                    st.add_fault(f)
                return 201, {"added": len(faults)}
            if method == "DELETE":
                st.clear_faults()
                return 200, {"message": "success"}
            if method == "GET":
                return 200, {"faults": [_fault_json(f) for f in st.faults()]}
        elif parts == ["reset"] and method == "POST":
            st.reset()
            return 200, {"message": "success"}
        elif len(parts) == 3 and parts[0] == "workspaces" and method == "GET":
            if parts[2] == "stats":
                return 200, st.stats(parts[1]).to_json()
            if parts[2] == "deleted":
                return 200, {"deleted_ids": st.deleted_ids(parts[1])}
            if parts[2] == "arrivals":  # (time stored, array, object): latency measurements
                return 200, {"arrivals": st.arrivals(parts[1])}
        elif len(parts) == 4 and parts[0] == "workspaces" and parts[2] == "users" and method == "GET":
            profile = st.profile(parts[1], parts[3])
            if profile is None:
                return 404, {"message": "user not found"}
            return 200, profile.to_json()
        return 404, {"message": "Not Found"}


def _fault_json(f: Fault) -> dict[str, Any]:
    return {name: getattr(f, name) for name in Fault.__dataclass_fields__}


def _as_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _object(raw: bytes) -> dict[str, Any]:
    return _as_object(orjson.loads(raw))


def create_app(state: EmulatorState) -> EmulatorApp:
    """The ASGI app serving `state` (use with any ASGI server; `EmulatorServer` runs uvicorn)."""
    return EmulatorApp(state)
