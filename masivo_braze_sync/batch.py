"""Batch: pack Braze objects into as few requests as Braze's limits allow (CONTRACT §2.2, §8).

`/users/track` takes 75 objects per array (legacy rule: up to 225 in one request) or, for accounts
on Braze's newer rule, 75 objects in total. `/users/delete` takes 50 external ids. Bodies are
assembled from the objects' already-serialised JSON: nothing is encoded twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import polars as pl

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


def pack_track(objects: pl.DataFrame, *, max_objects: int = 75, combined: bool = False) -> list[RequestPlan]:
    """Pack an objects frame (key, array, body) into `/users/track` requests, order kept per array."""
    if objects.is_empty():
        return []
    keys = objects.get_column("key").to_list()
    arrays = objects.get_column("array").to_list()
    bodies = objects.get_column("body").to_list()
    plans: list[RequestPlan] = []
    if combined:
        for start in range(0, len(keys), max_objects):
            parts: dict[str, list[bytes]] = {}
            plan_arrays: dict[str, list[str]] = {}
            for i in range(start, min(start + max_objects, len(keys))):
                parts.setdefault(arrays[i], []).append(bodies[i])
                plan_arrays.setdefault(arrays[i], []).append(keys[i])
            plans.append(RequestPlan(len(plans), TRACK, _track_body(parts), plan_arrays))
        return plans
    by_array: dict[str, list[int]] = {}
    for i, a in enumerate(arrays):
        by_array.setdefault(a, []).append(i)
    n_requests = max((len(ix) + max_objects - 1) // max_objects for ix in by_array.values())
    for r in range(n_requests):
        parts, plan_arrays = {}, {}
        for a, ix in by_array.items():
            chunk = ix[r * max_objects : (r + 1) * max_objects]
            if chunk:
                parts[a] = [bodies[i] for i in chunk]
                plan_arrays[a] = [keys[i] for i in chunk]
        plans.append(RequestPlan(r, TRACK, _track_body(parts), plan_arrays))
    return plans


def pack_delete(external_ids: list[str], *, max_ids: int = 50, first_seq: int = 0) -> list[RequestPlan]:
    """`/users/delete` requests of at most `max_ids` external ids each."""
    plans = []
    for n, start in enumerate(range(0, len(external_ids), max_ids)):
        ids = external_ids[start : start + max_ids]
        plans.append(RequestPlan(first_seq + n, DELETE, orjson.dumps({"external_ids": ids}), {"external_ids": ids}))
    return plans


def min_requests(objects: int, per_request: int = 75) -> int:
    """The fewest requests that can carry `objects` objects."""
    return (objects + per_request - 1) // per_request


def pack(
    objects: pl.DataFrame, *, max_objects: int = 75, combined: bool = False, max_delete_ids: int = 50
) -> list[RequestPlan]:
    """All requests for an objects frame: `/users/track` ones first, then `/users/delete` ones."""
    is_delete = pl.col("array") == "delete"
    plans = pack_track(objects.filter(~is_delete), max_objects=max_objects, combined=combined)
    deletes = objects.filter(is_delete).get_column("key").to_list()
    return plans + pack_delete(deletes, max_ids=max_delete_ids, first_seq=len(plans))
