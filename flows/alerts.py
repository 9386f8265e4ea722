"""Emit the sync's events (`masivo_braze_sync/signals.py`) to Prefect, where automations match them.

Emitting never fails a sync: Prefect's events client queues the event and sends it in the
background; an error here is logged and the run goes on.
"""

from __future__ import annotations

import logging

from prefect.events import emit_event

from masivo_braze_sync.signals import Signal

log = logging.getLogger(__name__)


def emit(signals: list[Signal]) -> None:
    """Send each signal as a Prefect event (related to the current run, when there is one)."""
    for signal in signals:
        try:
            emit_event(signal.event, resource=signal.resource, payload=signal.payload)
        except Exception:  # alerts are a side channel: the sync's outcome does not depend on them
            log.warning("could not emit %s for %s", signal.event, signal.resource["prefect.resource.id"], exc_info=True)
