"""The customers and purchases mappings produce, byte for byte, what they produced at commit 6baa2ae.

The golden file holds every output of validate and transform (objects and their bodies, state
rows, rejected rows and reasons, skip counts and keys, metrics, in order) over the seeded varied
dataset of tests/mapping_data.py, first runs and update runs, under several account settings.
Faster mapping code must leave it unchanged. To write it again (only for an intended change of
output): `uv run python -m tests.core.test_mapping_golden --write`.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from masivo_braze_sync.entities.customers import CUSTOMERS
from masivo_braze_sync.entities.purchases import PURCHASES
from tests.mapping_data import outcome, play_customers, play_purchases

GOLDEN = Path(__file__).parent / "golden" / "mapping.json.gz"
CUSTOMERS_N, PURCHASES_N = 400, 300


def produce() -> dict[str, Any]:
    """Every run's outcome, as JSON-ready values."""
    runs = [*play_customers(CUSTOMERS, CUSTOMERS_N, seed=1), *play_purchases(PURCHASES, PURCHASES_N, seed=2)]
    return {name: outcome(valid, out) for name, valid, out in runs}


def _first_difference(expected: Any, actual: Any) -> str:
    if isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            if e != a:
                return f"[{i}]: expected {e!r:.400}, got {a!r:.400}"
        return f"lengths differ: expected {len(expected)}, got {len(actual)}"
    return f"expected {expected!r:.400}, got {actual!r:.400}"


@pytest.fixture(scope="module")
def produced() -> dict[str, Any]:
    # orjson round trip: the golden file's types (tuples become lists)
    return orjson.loads(orjson.dumps(produce()))


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return orjson.loads(gzip.decompress(GOLDEN.read_bytes()))


def test_every_run_is_covered(produced: dict[str, Any], golden: dict[str, Any]) -> None:
    assert list(produced) == list(golden)
    # the dataset reaches the rules it is there for
    everything = orjson.dumps(golden).decode()
    for reason in (
        "field email dropped",
        "field phone dropped",
        "nested deeper than",
        "collides with",
        "truncated",
        "order held",
        "fulfilled again after its reversal",
        "line changed after it was sent",
        "line changed after an interrupted send",
        "currency is not an ISO 4217 code",
        "ecommerce.order_refunded",
        "ecommerce.order_cancelled",
        "LINE_DELETED",
        "_update_existing_only",
    ):
        assert reason in everything, reason


@pytest.mark.parametrize("part", ["customers", "purchases"])
def test_outputs_match_the_golden_file(produced: dict[str, Any], golden: dict[str, Any], part: str) -> None:
    for name, expected in golden.items():
        if not name.startswith(part):
            continue
        for component, value in expected.items():
            actual = produced[name][component]
            assert actual == value, f"{name}, {component} {_first_difference(value, actual)}"


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_bytes(gzip.compress(orjson.dumps(produce()), mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size:,} bytes)")
