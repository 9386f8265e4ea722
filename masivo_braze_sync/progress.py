"""Progress of running account syncs, for whoever displays it (the CLI's bar, Prefect artifacts).

Runs report `(entity, account, rows done, rows total)` as batches commit; displays subscribe. A
display that fails never disturbs the sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Sink = Callable[[str, str, int, int], None]
#: process-wide on purpose: a display (the CLI's bar) and the runs Prefect starts in the same
#: process have no other handle on each other
_sinks: list[Sink] = []


def subscribe(sink: Sink) -> None:
    """Receive every progress report of this process."""
    _sinks.append(sink)


def unsubscribe(sink: Sink) -> None:
    """Stop receiving reports."""
    if sink in _sinks:
        _sinks.remove(sink)


def report(entity: str, account_id: str, done: int, total: int) -> None:
    """Tell every subscriber how far an account's run is (change-log rows)."""
    for sink in list(_sinks):
        try:
            sink(entity, account_id, done, total)
        except Exception:
            log.debug("progress sink failed", exc_info=True)
