"""Stop a live session cleanly on SIGTERM or Ctrl-C (the CLI and the demo; Prefect has its own).

The first signal asks the session to stop: every micro-batch in flight is finished and committed,
the runs are closed (locks released, summaries recorded). A second signal cancels what is still
running; a batch cut off there stays open in the ledger and the next run resumes it (nothing is
half-committed: the cursor moves only in the batch's commit).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from masivo_braze_sync.live.session import LiveSession


async def run_until_signalled(session: LiveSession, on_signal: Callable[[int], None] | None = None) -> None:
    """Run `session` until SIGINT or SIGTERM (or until its own stop event is set by the caller)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    signals = (signal.SIGINT, signal.SIGTERM)

    def handle(signum: int) -> None:
        if on_signal is not None:
            on_signal(signum)
        if stop.is_set() and task is not None:
            task.cancel()  # a second signal: stop waiting for the batch in flight
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, handle, signum)
    try:
        await session.run(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
