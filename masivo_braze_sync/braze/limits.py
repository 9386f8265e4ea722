"""Braze's documented limits, declared once (as dlt declares a destination's capabilities).

Every module that packs, validates, paces or checks against a Braze limit reads it from here;
settings that let an operator lower a limit take their defaults and bounds from here too.
The sources are in docs/braze.md#limits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BrazeLimits:
    """What one Braze workspace accepts, by default."""

    #: objects per array (attributes, events, purchases) in one /users/track request
    objects_per_array: int = 75
    #: external ids per /users/delete request
    delete_ids_per_request: int = 50
    #: /users/track requests per window, and the window
    track_requests: int = 3_000
    track_window_seconds: float = 3.0
    #: /users/delete requests per window, and the window
    delete_requests: int = 20_000
    delete_window_seconds: float = 60.0
    #: bytes of an external id
    external_id_bytes: int = 987
    #: characters of a custom attribute key, an event name, a property key or a string value
    string_chars: int = 255
    #: properties of one event or purchase that Braze keeps (it ignores those after the first 256)
    event_properties: int = 256
    #: values of one array custom attribute (Braze's default; raisable per attribute on request)
    array_values: int = 25
    #: bytes of one request body: Braze documents "4 MB" and answers 413 above it. Whether that
    #: is 4,000,000 or 4,194,304 bytes is not said: the smaller reading is assumed
    request_bytes: int = 4_000_000
    #: bytes of an event's properties once any of them is an object or an array (eCommerce
    #: events always carry the `products` array)
    nested_properties_bytes: int = 100 * 1024


#: the limits of a default Braze workspace
BRAZE = BrazeLimits()
