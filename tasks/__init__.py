"""Prefect tasks: thin wrappers over the core pipeline's stages (`masivo_braze_sync.pipeline`).

Tasks receive a run key (a string naming a live `AccountRun` in this process), batch references
(ids and log positions) and polars frames; never API keys, payload dicts or customer data, which
Prefect would store (PREFECT.md 2.6). Every task has `cache_policy=NO_CACHE`: they read or write
external state, and input hashing would cost time on frames for nothing (PREFECT.md 2.5, 2.7).
"""
