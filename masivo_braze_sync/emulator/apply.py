"""Applying validated requests to a workspace's profiles (docs/braze.md#what-the-emulator-checks).

Model (simpler than Braze, on purpose):
- Profiles with an external id live in `Store.profiles`, keyed by it. Objects identified only by
  a user alias, email or phone go to `Store.anonymous`, keyed by `(kind, ...)`; an email or phone
  first resolves to the external-id profile that most recently had it set. `braze_id` resolves
  through the ids this emulator assigned; it never creates a profile.
- `_update_existing_only` defaults: false with external_id/email/phone; true with user_alias for
  attributes (unless false is sent); always true with user_alias or braze_id for events and
  purchases. An update-only object for a missing user is silently not applied (and not billed).
- Attributes: a key set to null is removed; `{"inc": n}` adds; `{"add"/"remove"}` edit arrays
  (re-adding moves a value to the end; no element cap); `$add`/`$remove`/`$update` edit arrays
  of objects; nested objects overwrite, or deep-merge with `_merge_objects: true`.
- Data points (docs/braze.md#data-points): 1 per attribute key written, unchanged values included; nested objects 1 per
  key sent; array `add`/`remove` 1 per value; array-of-objects ops 1 per property. Not billed:
  identifiers, control keys, subscription states and push tokens, an email/phone used as the
  identifier. Events and purchases are not counted here.
- Events and purchases are stored as received minus identifier and control keys; event
  properties beyond the first 256 are dropped.
- `country`: a code in any case is stored upper-cased; anything else is stored as null (Braze maps
  names such as "Australia" too; the emulator knows codes only).

Nothing stored is mutated in place afterwards (edits build new lists/dicts), so shallow profile
copies are safe snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from masivo_braze_sync.emulator.validation import CONTROL_KEYS, ID_KEYS, MAX_EVENT_PROPERTIES, TrackPlan
from masivo_braze_sync.iso import COUNTRIES

_NOT_BILLED = frozenset({"email_subscribe", "push_subscribe", "subscription_groups", "push_tokens"})
_EVENT_STRIP = (*sorted(ID_KEYS), "_update_existing_only", "email", "phone")


@dataclass(slots=True)
class Profile:
    """One Braze user profile."""

    external_id: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    #: assigned by the emulator on creation (24 hex digits, like Braze's)
    braze_id: str = ""

    def copy(self) -> Profile:
        """A snapshot: new containers around the (never mutated) stored values."""
        return Profile(self.external_id, dict(self.attributes), list(self.events), list(self.purchases), self.braze_id)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (admin API)."""
        return {
            "external_id": self.external_id,
            "braze_id": self.braze_id,
            "attributes": self.attributes,
            "events": self.events,
            "purchases": self.purchases,
        }


@dataclass(slots=True)
class Store:
    """One workspace's users."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    anonymous: dict[tuple, Profile] = field(default_factory=dict)
    #: braze_id -> key in `profiles` (str) or `anonymous` (tuple)
    braze_index: dict[str, Any] = field(default_factory=dict)
    #: email / phone -> external id of the profile that most recently had it set
    email_index: dict[str, str] = field(default_factory=dict)
    phone_index: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    next_id: int = 1

    def _new(self, key: Any) -> Profile:
        bid = f"{self.next_id:024x}"
        self.next_id += 1
        if type(key) is str:
            p = Profile(key, braze_id=bid)
            self.profiles[key] = p
        else:
            p = Profile(None, braze_id=bid)
            if key[0] in ("email", "phone"):
                p.attributes[key[0]] = key[1]
            self.anonymous[key] = p
        self.braze_index[bid] = key
        return p

    def _get(self, key: Any) -> Profile | None:
        return self.profiles.get(key) if type(key) is str else self.anonymous.get(key)

    def resolve(self, ident: Any, create: bool) -> Profile | None:
        """The profile an identity points at, creating it when allowed."""
        if type(ident) is str:
            p = self.profiles.get(ident)
            if p is None and create:
                p = self._new(ident)
            return p
        kind = ident[0]
        if kind == "braze_id":
            key = self.braze_index.get(ident[1])
            return None if key is None else self._get(key)
        if kind in ("email", "phone"):
            index = self.email_index if kind == "email" else self.phone_index
            ext = index.get(ident[1])
            if ext is not None:
                p = self.profiles.get(ext)
                # the index may be stale: the profile's email changed or it was deleted
                if p is not None and p.attributes.get(kind) == ident[1]:
                    return p
        p = self.anonymous.get(ident)
        if p is None and create:
            p = self._new(ident)
        return p

    def remove(self, p: Profile, key: Any) -> None:
        """Delete a profile found under `key`."""
        if type(key) is str:
            self.profiles.pop(key, None)
        else:
            self.anonymous.pop(key, None)
        self.braze_index.pop(p.braze_id, None)


def _update_only(obj: dict[str, Any], ident: Any, array: str) -> bool:
    flag = obj.get("_update_existing_only")
    if type(ident) is str:
        return flag is True
    kind = ident[0]
    if kind == "braze_id":
        return True
    if kind == "user_alias":
        return flag is not False if array == "attributes" else True
    return flag is True


def _count_keys(v: dict[str, Any]) -> int:
    n = 0
    for x in v.values():
        n += 1
        if type(x) is dict and not (len(x) == 1 and "$time" in x):
            n += _count_keys(x)
    return max(n, 1)


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for k, v in new.items():
        cur = out.get(k)
        if type(v) is dict and type(cur) is dict and "$time" not in v:
            out[k] = _deep_merge(cur, v)
        else:
            out[k] = v
    return out


def _apply_op(a: dict[str, Any], k: str, v: dict[str, Any], merge: bool) -> int:
    """Apply an object-valued attribute; returns the data points it costs."""
    keys = v.keys()
    if keys == {"inc"}:
        cur = a.get(k)
        a[k] = (cur if type(cur) in (int, float) else 0) + v["inc"]
        return 1
    if keys <= {"add", "remove"}:
        cur = a.get(k)
        lst = list(cur) if type(cur) is list else []
        removes, adds = v.get("remove", ()), v.get("add", ())
        for x in removes:
            lst = [y for y in lst if y != x]
        for x in adds:
            if x in lst:
                lst.remove(x)
            lst.append(x)
        a[k] = lst
        return max(1, len(adds) + len(removes))
    if keys <= {"$add", "$remove", "$update"}:
        cur = a.get(k)
        lst = list(cur) if type(cur) is list else []
        cost = 0
        for r in v.get("$remove", ()):
            ik, iv = r["$identifier_key"], r["$identifier_value"]
            lst = [o for o in lst if not (type(o) is dict and o.get(ik) == iv)]
            cost += 1
        for u in v.get("$update", ()):
            ik, iv, new = u["$identifier_key"], u["$identifier_value"], u["$new_object"]
            lst = [_deep_merge(o, new) if type(o) is dict and o.get(ik) == iv else o for o in lst]
            cost += len(new)
        for o in v.get("$add", ()):
            lst.append(o)
            cost += len(o)
        a[k] = lst
        return max(1, cost)
    # a nested object (or a {"$time": ...} value)
    cur = a.get(k)
    a[k] = _deep_merge(cur, v) if merge and type(cur) is dict else v
    return _count_keys(v)


def _country(v: str) -> str | None:
    """Braze's best-effort country: an ISO 3166-1 alpha-2 code, or null (docs/braze.md#user-attributes-object)."""
    code = v.strip().upper()
    return code if code in COUNTRIES else None


def _apply_attributes(store: Store, p: Profile, obj: dict[str, Any], ident: Any) -> int:
    a = p.attributes
    merge = obj.get("_merge_objects") is True
    secondary = ident[0] if type(ident) is tuple and ident[0] in ("email", "phone") else None
    dp = 0
    for k, v in obj.items():
        if k in ID_KEYS or k in CONTROL_KEYS:
            continue
        if k == "country" and v is not None:
            v = _country(v)
        if v is None:
            a.pop(k, None)
            cost = 1
        elif type(v) is dict and v:
            cost = _apply_op(a, k, v, merge)
        else:
            a[k] = v
            cost = 1
        if k not in _NOT_BILLED and k != secondary:
            dp += cost
    if p.external_id is not None:
        # remember who holds an email/phone so email-only objects find the identified profile
        email, phone = a.get("email"), a.get("phone")
        if type(email) is str and "email" in obj:
            store.email_index[email] = p.external_id
        if type(phone) is str and "phone" in obj:
            store.phone_index[phone] = p.external_id
    return dp


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    out = obj.copy()
    # pop the few keys that may be there: cheaper than rebuilding the dict key by key
    for k in _EVENT_STRIP:
        if k in out:
            del out[k]
    props = out.get("properties")
    if type(props) is dict and len(props) > MAX_EVENT_PROPERTIES:
        out["properties"] = dict(islice(props.items(), MAX_EVENT_PROPERTIES))
    return out


def apply_track(store: Store, plan: TrackPlan) -> int:
    """Apply the plan's valid objects in Braze's order; returns data points billed."""
    dp = 0
    profiles = store.profiles
    for ident, obj in plan.valid.get("attributes", ()):
        p = store.resolve(ident, not _update_only(obj, ident, "attributes"))
        if p is not None:
            dp += _apply_attributes(store, p, obj, ident)
    for array in ("events", "purchases"):
        for ident, obj in plan.valid.get(array, ()):
            if type(ident) is str:  # the hot path: an external id, inlined
                p = profiles.get(ident)
                if p is None:
                    if obj.get("_update_existing_only") is True:
                        continue
                    p = store._new(ident)
            else:
                p = store.resolve(ident, not _update_only(obj, ident, array))
                if p is None:
                    continue
            (p.events if array == "events" else p.purchases).append(_strip(obj))
    return dp


def apply_delete(store: Store, kind: str, ids: list[Any]) -> None:
    """Delete the users named by a validated /users/delete body."""
    for x in ids:
        if kind == "external_ids":
            p = store.profiles.get(x)
            if p is not None:
                store.remove(p, x)
            store.deleted.append(x)
            continue
        if kind == "user_aliases":
            key: Any = ("user_alias", x["alias_label"], x["alias_name"])
            p = store.anonymous.get(key)
        elif kind == "braze_ids":
            key = store.braze_index.get(x)
            p = None if key is None else store._get(key)
        else:
            ident = ("email", x["email"]) if kind == "email_addresses" else ("phone", x["phone"])
            p = store.resolve(ident, create=False)
            key = p.external_id if p is not None and p.external_id is not None else ident
        if p is None:
            continue
        store.remove(p, key)
        if p.external_id is not None:
            store.deleted.append(p.external_id)
