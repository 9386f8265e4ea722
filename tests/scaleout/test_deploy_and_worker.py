"""`prefect deploy --all` against a real server, a worker on the process pool, a flow run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def prefect(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_deploy_all_then_a_worker_runs_a_deployment_from_this_checkout(
    run_env, make_account, add_events, received
) -> None:
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 30)
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "masivo-braze-process", "--type", "process"],
        env=run_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        api = run_env["PREFECT_API_URL"]
        deadline = time.monotonic() + 60  # the worker creates the pool when it starts
        while httpx.get(f"{api}/work_pools/masivo-braze-process", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the worker did not create its work pool"
            time.sleep(0.5)

        deployed = prefect("--no-prompt", "deploy", "--all", env=run_env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        for name in ("sync-customers", "sync-events"):
            assert name in deployed.stdout

        run = prefect("deployment", "run", "sync-events/sync-events", env=run_env)
        assert run.returncode == 0, run.stdout + run.stderr

        deadline = time.monotonic() + 180
        while sorted(received("acct-1")) != sorted(ids):
            assert time.monotonic() < deadline, "the worker never ran the deployment"
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            time.sleep(1)
        flow_runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        states = {r["name"]: r["state"]["type"] for r in flow_runs}
        assert "events-acct-1" in states
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
