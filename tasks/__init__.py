"""Prefect tasks: thin wrappers over the core pipeline's stages (`masivo_braze_sync.pipeline`).

A stage task receives a call with no arguments that closes over the account run, so nothing it
works on (frames of customer rows, payloads, the API key) becomes a task parameter; the frames it
returns are customer data and stay in this process: tasks run with `persist_result=False`
(docs/prefect.md#result-persistence-and-what-prefect-stores). Every task has
`cache_policy=NO_CACHE`: stages read and write external state, so a cached answer would be wrong,
and hashing their inputs would cost time for nothing (docs/prefect.md#task-caching).
"""
