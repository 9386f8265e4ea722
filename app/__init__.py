"""The application layer: the `masivo-braze` command, the demo and the terminal reports.

It sits above `flows/` (it runs them) and `tasks/`; the core package `masivo_braze_sync` never
imports it. Like `flows/` and `tasks/`, it runs from the checkout and is not shipped in the wheel
(docs/architecture.md#packaging).
"""
