"""Customers and purchases mapping (validate + transform), rows per CPU-second, this checkout's code
side by side with an older commit's: `uv run python benchmarks/mapping.py --against 6baa2ae`.

The frames are built once here (no database: the mapping is pure CPU) and written to Parquet:

- `seed`: the shapes of benchmarks/seed.py (what the `stages` part extracts): customers with email,
  name, country, language, tier, points, nested attributes and a tag; orders 9 in 10 fulfilled,
  two lines each;
- `seed+phones`: the same customers with a phone on every other row, each a different number
  (seed.py has none; real profiles do, and a phone costs the most of any field);
- `seed, unique lines`: those orders with a unit price of their own, so that no two orders share
  their lines text (the purchases mapping checks each distinct lines text once per batch);
- `varied`: tests/mapping_data.py's edge cases (bad fields, unicode, nested attributes, refunds,
  edits, interrupted attempts), a first run and an update run.

Each code version runs in its own process (`worker` mode, the version's checkout first on
PYTHONPATH; the older one from a `git archive` of REF), the versions interleaved, `--repeats`
processes each. A process maps every frame `--passes` times after one warm-up pass and reports,
per entity, rows per CPU-second of the thread (`time.thread_time`: what the machine's load does
not change) of its best pass, and a digest of everything the mapping produced, which must be the
same for both versions. `--profile` adds each version's cProfile top functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENTITIES = ("customers", "purchases")


# -- the frames (parent process, this checkout's code) ---------------------------------------------


def seed_customers(n: int, *, phones: bool = False) -> list[dict[str, Any]]:
    """Customer rows as seed.py writes them and the extract reads them; with `phones`, a phone (each
    a different number) on every other row."""
    import orjson

    rows = []
    for g in range(1, n + 1):
        rows.append(
            {
                "key": f"acct-1-c{g}",
                "active": g % 100 != 0,
                "email": f"member{g}@example.com",
                "phone": (f"+57 300 {g // 10000 % 1000:03d} {g % 10000:04d}" if g % 4 == 1 else f"300 {g:07d}")
                if phones and g % 2
                else None,
                "first_name": "Member",
                "last_name": f"N{g}",
                "gender": None,
                "dob": None,
                "country": "CO",
                "language": "es",
                "city": None,
                "status": None,
                "tier": ("SILVER", "GOLD", "PLATINUM")[g % 3],
                "points": str(g % 5000),
                "tags": orjson.dumps({"vip": g % 10 == 0}).decode(),
                "attributes": orjson.dumps(
                    {"prefs": {"sms": g % 2 == 0, "store": g % 17}, "segment": ("new", "loyal", "lapsed")[g % 3]}
                ).decode(),
                "sent_before": False,
                "field_hashes": None,
            }
        )
    return rows


def seed_orders(n: int, *, unique_lines: bool = False) -> list[dict[str, Any]]:
    """Order rows as seed.py writes them and the purchases extract reads them (nothing sent yet);
    with `unique_lines`, each order's unit price differs, so no two orders have the same lines."""
    import orjson

    rows = []
    for g in range(1, n + 1):
        lines = [
            {
                "sku": f"SKU-{(g + ln) % 40}",
                "name": f"Product {(g + ln) % 40}",
                "line_no": ln,
                "quantity": 1 + g % 3,
                "properties": {"color": ("red", "blue")[ln - 1]},
                "unit_price": str(1000 + g) if unique_lines else str(1000 + (g % 50) * 100),
            }
            for ln in (1, 2)
        ]
        pending = g % 10 == 0
        at = f"2026-11-{1 + g % 28:02d}T{g % 24:02d}:{g % 60:02d}:05.123Z"
        rows.append(
            {
                "key": f"acct-1-o{g}",
                "present": True,
                "customer_id": f"acct-1-c{1 + (g * 31) % 5000}",
                "status": "PENDING" if pending else "FULFILLED",
                "currency": "COP",
                "fulfilled_at": None if pending else at,
                "reversed_at": None,
                "cancelled_at": None,
                "updated_at": at,
                "deleted_at": "2026-11-30T12:00:00.000Z",
                "read_at": "2026-11-30T12:00:00.000Z",
                "customer_state": "deleted" if g % 100 == 0 else "active",
                "lines": orjson.dumps(lines).decode(),
                "sent": None,
                "prior": None,
                "esent": None,
                "eprior": None,
            }
        )
    return rows


def build_frames(workdir: Path, customers: int, orders: int) -> list[dict[str, Any]]:
    """Write the frames as Parquet; returns their manifest (file, entity, context, dataset)."""
    sys.path.insert(0, str(ROOT))
    from masivo_braze_sync.entities.customers import CUSTOMERS
    from masivo_braze_sync.entities.purchases import PURCHASES
    from tests import mapping_data as md

    manifest = []

    def put(name: str, entity: str, frame: Any, ctx: Any, dataset: str) -> None:
        path = workdir / f"{name}.parquet"
        frame.write_parquet(path)
        manifest.append(
            {
                "file": str(path),
                "entity": entity,
                "dataset": dataset,
                "ctx": [ctx.account_id, ctx.currency, ctx.toggles, ctx.orders_as],
            }
        )

    on = md.CUSTOMER_CONTEXTS[0]
    put("customers-seed", "customers", md.customers_frame(seed_customers(customers)), on, "seed")
    put("customers-phones", "customers", md.customers_frame(seed_customers(customers, phones=True)), on,
        "seed+phones")  # fmt: skip
    put("purchases-seed", "purchases", md.orders_frame(seed_orders(orders)), md.ORDER_CONTEXTS[0], "seed")
    put("purchases-unique", "purchases", md.orders_frame(seed_orders(orders, unique_lines=True)), md.ORDER_CONTEXTS[0],
        "seed, unique lines")  # fmt: skip
    # varied: a first run and an update run over what the first stored (as the golden test plays them)
    rows = md.customer_rows(customers // 2, seed=11)
    first = CUSTOMERS.transform(CUSTOMERS.validate(md.customers_frame(rows), on).frame, on)
    put("customers-varied-first", "customers", md.customers_frame(rows), on, "varied")
    put("customers-varied-update", "customers", md.customers_frame(md.customers_update(rows, first.state, 12)), on,
        "varied")  # fmt: skip
    both = md.ORDER_CONTEXTS[3]
    orows = md.order_rows(orders // 2, seed=13)
    ofirst = PURCHASES.transform(PURCHASES.validate(md.orders_frame(orows), both).frame, both)
    for i, ctx in enumerate((md.ORDER_CONTEXTS[0], both)):
        put(f"purchases-varied-first-{i}", "purchases", md.orders_frame(orows), ctx, "varied")
        again = md.orders_frame(md.orders_update(orows, ofirst.frame, ofirst.state, 14))
        put(f"purchases-varied-update-{i}", "purchases", again, ctx, "varied")
    return manifest


# -- one code version (worker process) ---------------------------------------------------------------


def _digest(h: Any, prepared: Any) -> None:
    import orjson

    for df in (prepared.frame, prepared.rejected, prepared.state, prepared.skipped_keys):
        if df is not None:
            h.update(orjson.dumps([list(r) for r in df.iter_rows()], default=lambda b: b.decode()))
    h.update(orjson.dumps(sorted(prepared.skipped.items())))
    h.update(orjson.dumps(sorted(prepared.metrics.items())))


def worker(manifest_path: str, out: str, passes: int, profile: bool) -> None:
    """Map every frame `passes` times (after a warm-up pass); write rates and digests as JSON."""
    import polars as pl

    import masivo_braze_sync
    from masivo_braze_sync.entities import ENTITIES as REGISTRY
    from masivo_braze_sync.entities.base import AccountContext

    manifest = json.loads(Path(manifest_path).read_text())
    work = [
        (m, REGISTRY[m["entity"]], pl.read_parquet(m["file"]), AccountContext(*m["ctx"])) for m in manifest
    ]  # fmt: skip
    result: dict[str, Any] = {"code": str(Path(masivo_braze_sync.__file__).parent), "passes": []}
    profiler = None
    # pass 0 warms caches (imports, phone metadata) and is not counted; a profiled pass comes last
    for n in range(passes + 1 + profile):
        cpu: dict[str, float] = {}
        rows: dict[str, int] = {}
        digests: dict[str, str] = {}
        if profile and n == passes + 1:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for m, entity, frame, ctx in work:
            key = f"{m['entity']}/{m['dataset']}"
            c = time.thread_time()
            valid = entity.validate(frame, ctx)
            mapped = entity.transform(valid.frame, ctx)
            cpu[key] = cpu.get(key, 0.0) + time.thread_time() - c
            rows[key] = rows.get(key, 0) + frame.height
            h = hashlib.sha256()
            _digest(h, valid)
            _digest(h, mapped)
            digests[Path(m["file"]).stem] = h.hexdigest()[:16]
        if profiler is not None:
            profiler.disable()
            result["profile"] = _profile_top(profiler)
            break  # a profiled pass is not timed
        if n:
            result["passes"].append({"cpu_s": cpu, "rows": rows})
        result["digests"] = digests
    Path(out).write_text(json.dumps(result))


def _profile_top(profiler: Any, n: int = 25) -> list[str]:
    import io
    import pstats

    s = io.StringIO()
    pstats.Stats(profiler, stream=s).sort_stats("tottime").print_stats(n)
    return [line for line in s.getvalue().splitlines() if line.strip()][-n - 1 :]


# -- the comparison (parent process) -----------------------------------------------------------------


def archive(ref: str, into: Path) -> Path:
    """`git archive` of `ref` extracted into `into`; returns the checkout root."""
    data = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_version(root: Path, manifest: Path, out: Path, passes: int, profile: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, str(HERE / "mapping.py"), "worker", str(manifest), str(out), str(passes)]
    subprocess.run([*cmd, *(["--profile"] if profile else [])], env=env, cwd=root, check=True)
    data = json.loads(out.read_text())
    if Path(data["code"]).resolve() != (root / "masivo_braze_sync").resolve():
        raise RuntimeError(f"the worker imported {data['code']}, not {root}")
    return data


def best_rates(data: dict[str, Any]) -> dict[str, float]:
    """Per entity/dataset, rows per CPU-second of the fastest pass (the least disturbed)."""
    keys = data["passes"][0]["rows"]
    return {k: max(p["rows"][k] / p["cpu_s"][k] for p in data["passes"]) for k in keys}


def compare(against: str, *, customers: int, orders: int, repeats: int, passes: int, profile: bool) -> dict[str, Any]:
    """Old (`against`) and this checkout's mapping, interleaved; medians of each process's best pass."""
    with tempfile.TemporaryDirectory(prefix="masivo-mapping-") as tmp:
        work = Path(tmp)
        old_root = archive(against, work / "old")
        frames = work / "frames"
        frames.mkdir()
        manifest = work / "manifest.json"
        manifest.write_text(json.dumps(build_frames(frames, customers, orders)))
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for r in range(repeats):
            for version, root in (("old", old_root), ("new", ROOT)):
                t = time.perf_counter()
                data = run_version(root, manifest, work / f"{version}-{r}.json", passes, profile and r == 0)
                runs[version].append(data)
                print(
                    f"[{time.strftime('%H:%M:%S')}] {version} {r + 1}/{repeats}: {best_rates(data)} "
                    f"({time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f})",
                    file=sys.stderr,
                    flush=True,
                )
    same = runs["old"][0]["digests"] == runs["new"][0]["digests"]
    keys = list(best_rates(runs["old"][0]))
    rates = {
        v: {k: statistics.median(best_rates(d)[k] for d in runs[v]) for k in keys} for v in ("old", "new")
    }  # fmt: skip
    return {
        "against": against,
        "identical_output": same,
        "digests": {v: runs[v][0]["digests"] for v in runs},
        "rates": rates,
        "speedup": {k: rates["new"][k] / rates["old"][k] for k in keys},
        "runs": {v: [best_rates(d) for d in runs[v]] for v in runs},
        "profile": {v: runs[v][0].get("profile") for v in runs},
    }


def table(res: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        f"| rows per CPU-second (median of {len(res['runs']['old'])} processes' best pass) "
        f"| {res['against']} | this checkout | x |",
        "|---|---|---|---|",
    ]
    for k, speedup in res["speedup"].items():
        lines.append(f"| {k} | {res['rates']['old'][k]:,.0f} | {res['rates']['new'][k]:,.0f} | {speedup:.2f} |")
    lines.append(f"\noutput identical (validate and transform, every frame): {res['identical_output']}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), "--profile" in sys.argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="6baa2ae", help="the commit to compare with (default 6baa2ae)")
    parser.add_argument("--customers", type=int, default=20_000, help="seed-shaped customer rows (varied: half)")
    parser.add_argument("--orders", type=int, default=10_000, help="seed-shaped orders (varied: half)")
    parser.add_argument("--repeats", type=int, default=3, help="processes per version, interleaved")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per process (after a warm-up)")
    parser.add_argument("--profile", action="store_true", help="print each version's cProfile top functions")
    args = parser.parse_args()
    res = compare(
        args.against,
        customers=args.customers,
        orders=args.orders,
        repeats=args.repeats,
        passes=args.passes,
        profile=args.profile,
    )
    if args.profile:
        for version, top in res["profile"].items():
            print(f"\n{version}: cProfile, first timed pass, by own time", *top, sep="\n")
    print(f"\nmapping, {time.strftime('%Y-%m-%d %H:%M')} UTC, load {os.getloadavg()[0]:.1f}")
    print(table(res))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"mapping-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"raw numbers: {path.relative_to(ROOT)}")
    return 0 if res["identical_output"] else 1


if __name__ == "__main__":
    sys.exit(main())
