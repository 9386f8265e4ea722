"""Partitions tests reuse the flows' Prefect test harness and the scale-out tests' real Prefect
server (one of each per session)."""

from tests.flows.conftest import prefect_api  # noqa: F401 - a fixture
from tests.scaleout.conftest import prefect_server, run_env  # noqa: F401 - fixtures
