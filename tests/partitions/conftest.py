"""The partitions flow tests share the flows' Prefect test harness (one per session)."""

from tests.flows.conftest import prefect_api  # noqa: F401 - a fixture
