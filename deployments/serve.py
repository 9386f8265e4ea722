"""Serve every deployment of `prefect.yaml` on its schedule from one process, without a work pool.

    uv run python deployments/serve.py

`prefect.yaml` is the one definition of the deployments (name, entrypoint, schedules, concurrency
limit, parameters, description, tags): `prefect deploy --all` reads it for work pools, and this
reads it for `prefect.serve`, so both paths schedule and limit runs alike. Adding a deployment is
one entry there. A key this loader does not translate is refused rather than ignored, so nothing
set in `prefect.yaml` applies to one path only (docs/prefect.md#deployments).

Runs against PREFECT_API_URL (a `prefect server start` or Prefect Cloud). Stopping the process does
not pause the schedules (`pause_on_shutdown=False`), so a restarting container keeps them.
"""

from __future__ import annotations

import importlib
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval, Schedule

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"

#: deployment keys translated below; `work_pool` is the workers' (serving needs no pool)
DEPLOYMENT_KEYS = frozenset(
    {
        "name",
        "description",
        "entrypoint",
        "parameters",
        "schedules",
        "concurrency_limit",
        "tags",
        "work_pool",
        "triggers",
    }
)
SCHEDULE_KEYS = frozenset({"cron", "interval", "timezone", "day_or", "active", "parameters", "slug"})


def load_definitions(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml (anchors resolved), each checked for unknown keys."""
    entries = yaml.safe_load(path.read_text())["deployments"]
    for entry in entries:
        unknown = set(entry) - DEPLOYMENT_KEYS
        for schedule in entry.get("schedules") or []:
            unknown |= {f"schedules.{k}" for k in set(schedule) - SCHEDULE_KEYS}
        if unknown:
            raise ValueError(
                f"{path.name}: deployment {entry.get('name')!r} sets {', '.join(sorted(unknown))}, which "
                f"deployments/serve.py does not translate; teach it there so both paths agree"
            )
    return entries


def load_flow(entrypoint: str) -> Flow:
    """`flows/events.py:sync_events` -> the flow object, imported as a module of the checkout."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def _schedule(entry: dict[str, Any]) -> Schedule:
    options = {k: entry[k] for k in ("timezone", "active", "parameters", "slug") if k in entry}
    if "cron" in entry:
        return Cron(entry["cron"], day_or=entry.get("day_or", True), **options)
    if "interval" in entry:
        return Interval(timedelta(seconds=entry["interval"]), **options)
    raise ValueError(f"a schedule needs `cron` or `interval` (seconds), got {sorted(entry)}")


def to_deployment(entry: dict[str, Any]) -> RunnerDeployment:
    """One prefect.yaml entry as the deployment `prefect.serve` runs."""
    limit = entry.get("concurrency_limit")
    return load_flow(entry["entrypoint"]).to_deployment(
        name=entry["name"],
        description=entry.get("description"),
        tags=entry.get("tags"),
        parameters=entry.get("parameters") or {},
        schedules=[_schedule(s) for s in entry.get("schedules") or []],
        concurrency_limit=ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit,
        triggers=[DeploymentEventTrigger(**t) for t in entry.get("triggers") or []],
    )


def deployments(path: Path = PREFECT_YAML) -> list[RunnerDeployment]:
    """Every deployment defined in prefect.yaml."""
    return [to_deployment(entry) for entry in load_definitions(path)]


def main() -> None:
    """Register the deployments and run their schedules until interrupted."""
    serve(*deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # `python deployments/serve.py` puts deployments/ first, not the checkout
    main()
