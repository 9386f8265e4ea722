"""Process memory: fewer glibc malloc arenas.

glibc gives each thread that allocates under contention its own arena (up to 8 per core), and
freed memory stays in the arena it came from. The pipeline allocates large buffers (request
bodies, Arrow buffers) on the event loop, on asyncio's worker threads and on the read-ahead
thread, so freed batches linger in several arenas: peak RSS of a 200,000-event run was 490 MB with
the default and 457 MB with two arenas (benchmarks/RESULTS.md). `MALLOC_ARENA_MAX=2` does the
same from the environment; this sets it from inside, for every entry point (CLI, flows, demo).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (no-op elsewhere, or when MALLOC_ARENA_MAX is set). True if set."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator's setting wins
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
