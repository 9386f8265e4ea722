"""Live mode: wake-ups from the change log's notifications drive micro-batches through the same
per-account run as the batch syncs (docs/live.md). No orchestration framework here: the Prefect
flow (`flows/live.py`) and the CLI (`masivo-braze live`) only start a `LiveSession` and show it.
"""

from masivo_braze_sync.live.session import BatchLine, LiveSession

__all__ = ["BatchLine", "LiveSession"]
