"""Batch: pack Braze objects into as few requests as Braze's limits allow (docs/braze.md#limits).

`/users/track` takes 75 objects per array (legacy rule: up to 225 in one request) or, for accounts
on Braze's newer rule, 75 objects in total, and a body of at most `BRAZE.request_bytes` (Braze
refuses a larger one whole, with 413): a request closes at whichever limit comes first, objects
kept in order per array. `/users/delete` takes 50 external ids (50 ids of 987 bytes are far below
the byte limit). Bodies are assembled from the objects' already-serialised JSON: nothing is
encoded twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import polars as pl

from masivo_braze_sync.braze.limits import BRAZE

TRACK = "/users/track"
DELETE = "/users/delete"
TRACK_ARRAYS = ("attributes", "events", "purchases")  # Braze applies them in this order


@dataclass
class RequestPlan:
    """One request to send: its body and the ledger keys of the objects it carries."""

    seq: int
    endpoint: str
    body: bytes
    #: array name -> keys in the order of that array (Braze's errors point at array + index)
    arrays: dict[str, list[str]] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Every object's key, attributes first."""
        return [k for a in TRACK_ARRAYS for k in self.arrays.get(a, ())] + self.arrays.get("external_ids", [])

    @property
    def object_count(self) -> int:
        """Objects (or ids) in the request."""
        return sum(len(v) for v in self.arrays.values())

    def key_at(self, array: str, index: int) -> str | None:
        """The key of the object Braze refers to by array and index, if it exists."""
        keys = self.arrays.get(array, [])
        return keys[index] if 0 <= index < len(keys) else None


def _track_body(parts: dict[str, list[bytes]]) -> bytes:
    chunks = [b'"' + a.encode() + b'":[' + b",".join(parts[a]) + b"]" for a in TRACK_ARRAYS if parts.get(a)]
    return b"{" + b",".join(chunks) + b"}"


def _array_head(array: str) -> int:
    return len(array) + 5  # `"name":[` and `]`


class _Request:
    """A request being filled: its objects per array and its exact body size so far."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.keys: dict[str, list[str]] = {}
        self.count = 0
        self.size = 2  # `{}`

    def cost(self, array: str, body: bytes) -> int:
        """Bytes the body grows by when `body` joins `array`."""
        if array in self.parts:
            return len(body) + 1  # `,`
        return len(body) + _array_head(array) + (1 if self.parts else 0)  # `,` between arrays

    def add(self, array: str, key: str, body: bytes) -> None:
        self.size += self.cost(array, body)
        self.parts.setdefault(array, []).append(body)
        self.keys.setdefault(array, []).append(key)
        self.count += 1

    def plan(self, seq: int) -> RequestPlan:
        # arrays in Braze's order of application, whatever order they were filled in
        return RequestPlan(
            seq, TRACK, _track_body(self.parts), {a: self.keys[a] for a in TRACK_ARRAYS if a in self.keys}
        )


def pack_track(
    objects: pl.DataFrame,
    *,
    max_objects: int = BRAZE.objects_per_array,
    combined: bool = False,
    max_bytes: int = BRAZE.request_bytes,
) -> list[RequestPlan]:
    """Pack an objects frame (key, array, body) into `/users/track` requests, order kept per array.

    A request holds at most `max_objects` objects in total (`combined`) or per array, and at most
    `max_bytes` bytes of body. An object too big for any request on its own (no entity builds one:
    256 properties of 255 characters are ~70 KB) goes alone, and Braze's answer says why.
    """
    if objects.is_empty():
        return []
    keys = objects.get_column("key").to_list()
    arrays = objects.get_column("array").to_list()
    bodies = objects.get_column("body").to_list()
    plans: list[RequestPlan] = []
    if combined:
        req = _Request()
        for key, array, body in zip(keys, arrays, bodies, strict=True):
            if req.count and (req.count >= max_objects or req.size + req.cost(array, body) > max_bytes):
                plans.append(req.plan(len(plans)))
                req = _Request()
            req.add(array, key, body)
        plans.append(req.plan(len(plans)))
        return plans
    by_array: dict[str, list[int]] = {}
    for i, a in enumerate(arrays):
        by_array.setdefault(a, []).append(i)
    next_of = dict.fromkeys(by_array, 0)
    while any(next_of[a] < len(ix) for a, ix in by_array.items()):
        req = _Request()
        for a in TRACK_ARRAYS:  # Braze's order; each array fills up to its own 75
            ix = by_array.get(a, [])
            taken = 0
            while next_of.get(a, 0) < len(ix) and taken < max_objects:
                i = ix[next_of[a]]
                if req.count and req.size + req.cost(a, bodies[i]) > max_bytes:
                    break
                req.add(a, keys[i], bodies[i])
                next_of[a] += 1
                taken += 1
        if not req.count:  # arrays that are not Braze's (never built): fail loudly, not loop
            raise ValueError(f"unknown /users/track arrays: {sorted(set(by_array) - set(TRACK_ARRAYS))}")
        plans.append(req.plan(len(plans)))
    return plans


def pack_delete(
    external_ids: list[str], *, max_ids: int = BRAZE.delete_ids_per_request, first_seq: int = 0
) -> list[RequestPlan]:
    """`/users/delete` requests of at most `max_ids` external ids each."""
    plans = []
    for n, start in enumerate(range(0, len(external_ids), max_ids)):
        ids = external_ids[start : start + max_ids]
        plans.append(RequestPlan(first_seq + n, DELETE, orjson.dumps({"external_ids": ids}), {"external_ids": ids}))
    return plans


def pack(
    objects: pl.DataFrame,
    *,
    max_objects: int = BRAZE.objects_per_array,
    combined: bool = False,
    max_delete_ids: int = BRAZE.delete_ids_per_request,
    max_bytes: int = BRAZE.request_bytes,
) -> list[RequestPlan]:
    """All requests for an objects frame: `/users/track` ones first, then `/users/delete` ones."""
    is_delete = pl.col("array") == "delete"
    plans = pack_track(objects.filter(~is_delete), max_objects=max_objects, combined=combined, max_bytes=max_bytes)
    deletes = objects.filter(is_delete).get_column("key").to_list()
    return plans + pack_delete(deletes, max_ids=max_delete_ids, first_seq=len(plans))
