"""Prefect flows: one module per entity, each fanning out one run per account.

Each entity's flow is `flows/<name>.py:sync_<name>` (the entrypoint its deployment in prefect.yaml
names); `FLOWS` is derived from `ENTITIES`, so a missing flow module fails at import.
"""

from importlib import import_module

from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.memory import limit_malloc_arenas

#: the entity flows by consumer name (`masivo-braze sync <name>`), in `ENTITIES`' order
FLOWS = {name: vars(import_module(f"flows.{name}"))[f"sync_{name}"] for name in ENTITIES}

# a worker process imports the flows before its threads allocate: its one chance to cap malloc's
# arenas (masivo_braze_sync/memory.py says why)
limit_malloc_arenas()

__all__ = ["FLOWS"]
