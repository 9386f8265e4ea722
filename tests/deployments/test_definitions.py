"""One definition of the deployments: what `prefect.serve` runs is what prefect.yaml declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.serve import PREFECT_YAML, deployments, load_definitions

DECLARED = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


def test_every_entity_has_its_flow_and_a_scheduled_deployment_of_it() -> None:
    from flows import FLOWS
    from masivo_braze_sync.entities import ENTITIES

    assert list(FLOWS) == list(ENTITIES)
    for name, flow in FLOWS.items():
        declared = DECLARED[flow.name]
        assert declared["entrypoint"] == f"flows/{name}.py:sync_{name}", name
        assert declared.get("schedules"), name


def test_serve_runs_every_deployment_of_prefect_yaml_as_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PREFECT_YAML.parent)  # Prefect records entrypoints relative to the working directory
    served = {d.name: d for d in deployments()}
    assert set(served) == set(DECLARED)
    for name, declared in DECLARED.items():
        d = served[name]
        assert d.entrypoint == declared["entrypoint"], name
        assert d.description == declared.get("description"), name
        assert (d.tags or []) == (declared.get("tags") or []), name
        assert (d.parameters or {}) == (declared.get("parameters") or {}), name
        schedules = [(s.schedule.cron, s.schedule.timezone) for s in d.schedules or []]
        assert schedules == [(s["cron"], s.get("timezone")) for s in declared.get("schedules") or []], name
        limit = declared.get("concurrency_limit")
        if isinstance(limit, dict):
            assert d.concurrency_limit == limit["limit"], name
            assert d.concurrency_options.collision_strategy.value == limit["collision_strategy"], name
        else:
            assert d.concurrency_limit == limit, name
            assert d.concurrency_options is None, name


def test_scheduled_runs_that_would_overlap_are_dropped_on_both_paths() -> None:
    served = {d.name: d for d in deployments()}
    for name, declared in DECLARED.items():
        if declared.get("schedules"):
            assert declared["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}, name
            assert served[name].concurrency_options.collision_strategy.value == "CANCEL_NEW", name


def test_a_key_serve_cannot_translate_is_refused_not_ignored(tmp_path: Path) -> None:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    spec["deployments"][0]["paused"] = True
    spec["deployments"][1]["schedules"][0]["anchor_date"] = "2026-01-01"
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="deployment 'sync-customers' sets paused"):
        load_definitions(path)
    del spec["deployments"][0]["paused"]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"sets schedules\.anchor_date"):
        load_definitions(path)
