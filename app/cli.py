"""The `masivo-braze` command line (README "Using it"): db init, sync, status, emulator, demo."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from masivo_braze_sync.errors import AccountSyncFailed, ConfigurationError, DatabaseUnavailable, SyncError
from masivo_braze_sync.memory import limit_malloc_arenas

app = typer.Typer(
    help="Keep each Masivo account's Braze workspace in step with its loyalty data.", no_args_is_help=True
)
db_app = typer.Typer(help="Database set-up.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Rich assumes 80 columns when output is not a terminal (CI logs, pipes): give tables room
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _entity_choices() -> dict[str, str]:
    from masivo_braze_sync.entities import ENTITIES

    return {name: name for name in [*ENTITIES, "all"]}


#: what `sync` can run: every registered entity, or all of them
EntityName = StrEnum("EntityName", _entity_choices())


#: exit code of a transient failure (sysexits EX_TEMPFAIL): a scheduler may simply run the command again
EXIT_TRANSIENT = 75


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@db_app.command("init")
def db_init(
    source: Annotated[bool, typer.Option("--source", help="Also create Masivo's source tables.")] = False,
) -> None:
    """Create or migrate the sync schema and the change capture (safe to run twice)."""
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.db.migrate import current_revision, init_database

    try:
        db = Database.from_settings()
        created = init_database(db, source=source)
    except DatabaseUnavailable as exc:
        raise _fail(str(exc), EXIT_TRANSIENT) from None
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    if created:
        console.print(f"created Masivo tables: {', '.join(created)}")
    console.print(f"sync schema at revision {current_revision(db)}")


def _entity_names(entity: EntityName) -> list[str]:
    from masivo_braze_sync.entities import ENTITIES

    return list(ENTITIES) if entity.value == "all" else [entity.value]


@app.command()
def sync(
    entity: Annotated[EntityName, typer.Argument(help="What to sync.")],
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account (repeatable).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the payloads; send nothing, move no cursor.")
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="Re-read every current row of the entity for --account (a new workspace)."),
    ] = False,
    resend: Annotated[
        bool,
        typer.Option("--resend", help="With --full: also send events/purchases the ledger says were delivered."),
    ] = False,
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition",
            min=0,
            help="Only this partition of the entity for --account (see `masivo-braze partitions`); "
            "other processes may sync the other partitions at the same time.",
        ),
    ] = None,
) -> None:
    """Run the sync flow(s) once and exit; non-zero if any account failed."""
    names = _entity_names(entity)
    if (full or resend) and not account:
        raise _fail("--full re-sends a whole account: name it with --account ID")
    if resend and not full:
        raise _fail("--resend only makes sense with --full")
    if partition is not None and (not account or len(names) != 1):
        raise _fail("--partition takes one partition of one entity: name the entity and --account ID")
    if partition is not None:
        _check_partition(names[0], account, partition)
    if full:
        _queue_full(names, account, resend=resend, dry_run=dry_run)
    if dry_run:
        raise typer.Exit(_dry_run(names, account, partition))
    from app.report import print_summaries
    from flows import FLOWS
    from masivo_braze_sync.summary import AccountSummary

    failed: dict[str, str] = {}
    for name in names:
        try:
            with _progress_bar(name):
                rows = asyncio.run(FLOWS[name](account_ids=account, partition=partition))
            summaries = [AccountSummary(**r) for r in rows]
        except AccountSyncFailed as exc:
            summaries = exc.summaries
            failed.update({f"{name}/{a}": e for a, e in exc.failures.items()})
        except DatabaseUnavailable as exc:
            raise _fail(str(exc), EXIT_TRANSIENT) from None
        except ConfigurationError as exc:
            raise _fail(str(exc)) from None
        print_summaries(console, name, summaries)
    if failed:
        for where, why in sorted(failed.items()):
            err.print(f"[bold red]failed:[/] {where}: {why}")
        raise typer.Exit(1)


def _check_partition(name: str, account_ids: list[str], partition: int) -> None:
    from masivo_braze_sync import partitions
    from masivo_braze_sync.db import Database

    try:
        with Database.from_settings().connection() as conn:
            counts = partitions.counts(conn, name, account_ids)
    except DatabaseUnavailable as exc:
        raise _fail(str(exc), EXIT_TRANSIENT) from None
    for account_id, count in counts.items():
        if partition >= count:
            raise _fail(f"{name}/{account_id} has {count} partition(s): --partition must be 0 to {count - 1}")


def _queue_full(names: list[str], account_ids: list[str], *, resend: bool, dry_run: bool) -> None:
    from masivo_braze_sync.accounts import known_account_ids
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.requeue import full_resync

    db = Database.from_settings()
    with db.connection() as conn:
        unknown = sorted(set(account_ids) - known_account_ids(conn))
    if unknown:
        raise _fail(f"unknown account(s): {', '.join(unknown)}")
    if dry_run:
        raise _fail("--full queues rows for the next run; it cannot be combined with --dry-run")
    for name in names:
        for account_id in account_ids:
            queued = full_resync(db, ENTITIES[name], account_id, resend=resend)
            console.print(f"{name}/{account_id}: {queued:,} rows queued for a full sync")


@contextmanager
def _progress_bar(entity: str):
    """A rich progress bar per account while a flow runs in this process (terminals only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from masivo_braze_sync import progress

    if not console.is_terminal:
        yield
        return
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    tasks: dict[str, object] = {}

    def show(name: str, account_id: str, done: int, total: int) -> None:
        if name != entity:
            return
        if account_id not in tasks:
            tasks[account_id] = bars.add_task(f"{entity} {account_id}", total=total)
        bars.update(tasks[account_id], completed=done, total=total)

    progress.subscribe(show)
    try:
        with bars:
            yield
    finally:
        progress.unsubscribe(show)


@app.command()
def rejected(
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account (repeatable).")] = None,
    entity: Annotated[str | None, typer.Option(help="Only this entity (customers, events, ...).")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (newest first).")] = 50,
) -> None:
    """List rejected rows not retried yet, with the reason each was not sent."""
    from rich.table import Table

    from masivo_braze_sync.db import Database
    from masivo_braze_sync.requeue import list_rejected

    rows, total = list_rejected(Database.from_settings(), account_ids=account, entity=entity, limit=limit)
    if not rows:
        console.print("no rejected rows waiting")
        return
    table = Table(title=f"rejected rows ({len(rows):,} of {total:,}, newest first)", title_justify="left")
    for col in ("when", "account", "entity", "key", "stage", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.account_id, r.entity, r.key, r.stage, r.reason)
    console.print(table)


@app.command("retry-rejected")
def retry_rejected(
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account (repeatable).")] = None,
    entity: Annotated[str | None, typer.Option(help="Only this entity (customers, events, ...).")] = None,
) -> None:
    """Queue rejected rows again (after fixing them); the next sync sends those now valid."""
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.requeue import retry_rejected as requeue

    done = requeue(Database.from_settings(), ENTITIES, account_ids=account, entity=entity)
    if not done:
        console.print("no rejected rows waiting")
        return
    for (account_id, name), n in sorted(done.items()):
        console.print(f"{name}/{account_id}: {n:,} rejected rows queued again; run `masivo-braze sync {name}`")


def _dry_run(names: list[str], account_ids: list[str] | None, partition: int | None = None) -> int:
    """Build and print payloads without Prefect (so payloads never reach Prefect's logs)."""
    from masivo_braze_sync import partitions
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.pipeline import AccountRun

    db = Database.from_settings()
    with db.connection() as conn:
        accounts = load_accounts(conn, account_ids)
        counts = {n: partitions.counts(conn, n, [a.account_id for a in accounts]) for n in names}
    out = sys.stdout.buffer
    failed = False
    for name in names:
        spec = ENTITIES[name]
        summaries = []
        for acct, part in (
            (a, p)
            for a in accounts
            if spec.is_enabled(a)
            for p in ([partition] if partition is not None else range(counts[name][a.account_id]))
        ):

            def emit(body: bytes, _acct=acct.account_id) -> None:
                out.write(f"{_acct}\t".encode() + body + b"\n")

            run = AccountRun(db, spec, acct, dry_run=True, printer=emit, partition=part)

            async def go(run: AccountRun = run) -> None:
                async with run:
                    await run.run()

            try:
                asyncio.run(go())
            except ConfigurationError as exc:  # this account's setting is wrong: named, the others go on
                err.print(str(exc))
            out.flush()
            summaries.append(run.summary)
        err.print(summary_table_text(name, summaries))
        failed |= any(s.status == "failed" for s in summaries)
    return 1 if failed else 0


def summary_table_text(name: str, summaries: list) -> object:
    """The summary table (printed on stderr in a dry run so stdout holds only payloads)."""
    from app.report import summary_table

    return summary_table(f"{name} (dry run)", summaries)


@app.command("partitions")
def partitions_command(
    account_id: Annotated[str, typer.Argument(help="The Masivo account.")],
    entity: Annotated[str | None, typer.Argument(help="customers, events or purchases.")] = None,
    count: Annotated[int | None, typer.Argument(min=1, help="The new number of partitions (1: none).")] = None,
) -> None:
    """Show, or change, how many partitions (processes) an account's entities can be synced by.

    A change first sends what each current partition has up to a common position, then switches;
    stop the syncs of the account's entity while it runs (docs/operations.md#partitions).
    """
    from masivo_braze_sync import partitions
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.repartition import repartition
    from tasks.concurrency import prefect_budget, shared_server_configured
    from tasks.secrets import resolve_api_key

    if entity is not None and entity not in ENTITIES:
        raise _fail(f"unknown entity {entity!r}: one of {', '.join(ENTITIES)}")
    try:
        db = Database.from_settings()
        with db.connection() as conn:
            accounts = load_accounts(conn, [account_id])
            if not accounts:
                raise _fail(f"account {account_id}: no Braze integration configured")
            if count is None:
                for name in [entity] if entity else list(ENTITIES):
                    console.print(f"{name}/{account_id}: {partitions.count(conn, name, account_id)} partition(s)")
                return
        account = asyncio.run(resolve_api_key(accounts[0]))
        budget = prefect_budget if shared_server_configured() else None
        change = asyncio.run(repartition(db, ENTITIES[entity], account, count, budget_factory=budget))
    except DatabaseUnavailable as exc:
        raise _fail(str(exc), EXIT_TRANSIENT) from None
    except SyncError as exc:  # a running sync, a lagging partition, an entity that cannot be partitioned
        raise _fail(str(exc)) from None
    console.print(f"{entity}/{account_id}: {change.before} → {change.after} partition(s)")
    if change.after > 1:
        console.print(
            f"run `masivo-braze sync {entity} --account {account_id} --partition P` for P in 0..{change.after - 1}"
        )


@app.command("resync-audience")
def resync_audience(
    account_id: Annotated[str, typer.Argument(help="The Masivo account.")],
    audience_id: Annotated[str, typer.Argument(help="The audience to re-send.")],
) -> None:
    """Re-send the audience's attribute (true) to every current member; non-zero if it failed."""
    from app.report import print_summaries
    from flows.audiences import resync_audience as resync_flow
    from masivo_braze_sync.pipeline import RunFailed
    from masivo_braze_sync.summary import AccountSummary

    try:
        summary = AccountSummary(**asyncio.run(resync_flow(account_id=account_id, audience_id=audience_id)))
    except RunFailed as exc:
        print_summaries(console, "audience resync", [exc.summary])
        raise _fail(str(exc), 1) from None
    except SyncError as exc:  # unknown account or audience, busy, configuration: nothing sent
        raise _fail(str(exc), 1) from None
    print_summaries(console, "audience resync", [summary])


@app.command()
def status() -> None:
    """Per account and entity: backlog, last success, last error, rejected rows."""
    from app.report import print_status
    from masivo_braze_sync.db import Database

    try:
        print_status(console, Database.from_settings())
    except DatabaseUnavailable as exc:
        raise _fail(str(exc), EXIT_TRANSIENT) from None
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 4010,
    workspace: Annotated[
        list[str] | None,
        typer.Option(help="NAME:API_KEY[:RATE_PER_3S] of a workspace to create (repeatable)."),
    ] = None,
) -> None:
    """Run the local Braze emulator until interrupted."""
    from masivo_braze_sync.emulator import EmulatorState, Workspace, serve

    state = EmulatorState()
    for spec in workspace or ["demo:demo-key"]:
        parts = spec.split(":")
        if len(parts) < 2:
            raise _fail(f"--workspace wants NAME:API_KEY, got {parts[0]!r}...")
        kwargs = {"rate_limit": int(parts[2])} if len(parts) > 2 else {}
        state.add_workspace(Workspace(name=parts[0], api_key=parts[1], **kwargs))
    console.print(f"Braze emulator on http://127.0.0.1:{port} (workspaces: {', '.join(state.workspace_names())})")
    serve(state, host="127.0.0.1", port=port, on_ready=lambda *_: None)


@app.command("live")
def live_command(
    entity: Annotated[
        list[str] | None, typer.Option("--entity", help="Only this entity (repeatable; default all).")
    ] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only this account (repeatable).")] = None,
) -> None:
    """Send changes as they commit (no Prefect server needed); Ctrl-C or SIGTERM stops cleanly."""
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.live import BatchLine, LiveSession
    from masivo_braze_sync.live.signals import run_until_signalled

    unknown = sorted(set(entity or ()) - set(ENTITIES))
    if unknown:
        raise _fail(f"unknown entity: {', '.join(unknown)} (choose from {', '.join(ENTITIES)})")

    def show(line: BatchLine) -> None:
        console.print(
            f"{line.consumer}/{line.account_id}: {line.rows:,} changes, {line.objects_sent:,} objects "
            f"in {line.requests:,} requests ({line.seconds:.3f}s)",
            highlight=False,
        )

    from tasks.secrets import resolve_api_key

    try:
        session = LiveSession(
            Database.from_settings(),
            entities=entity,
            account_ids=account,
            on_batch=show,
            prepare_account=resolve_api_key,  # `prefect-secret:<block>` keys, as in a sync run
        )
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    console.print("live: listening for changes (Ctrl-C to stop)")
    try:
        asyncio.run(
            run_until_signalled(session, on_signal=lambda _: console.print("live: stopping after the batch in flight"))
        )
    except (asyncio.CancelledError, KeyboardInterrupt):  # a second signal: the batch in flight was cut off
        console.print("live: stopped at once; a batch cut off stays open and the next run resumes it")
    from app.report import print_live_summary

    print_live_summary(console, session.summary_rows())


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Events to seed per account.")] = 2_000,
) -> None:
    """Seed demo accounts, start the emulator, sync everything, print the summary."""
    from app.demo import run_demo

    try:
        code = run_demo(console, events_per_account=events)
    except SyncError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def main() -> None:  # pragma: no cover - console entry point
    """Entry point."""
    # a quiet console, but INFO still goes to the Prefect server: the run's logs in the UI
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # Without PREFECT_API_URL, Prefect starts its ephemeral API server and gives it 20 s: measured
    # 20-30 s on a slow 2-core host, where `demo` then failed before doing anything
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the ephemeral server's telemetry heartbeat writes to its SQLite file while it starts and
    # hit "database is locked" there; nothing here can reach Prefect's telemetry anyway
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    limit_malloc_arenas()  # before any thread allocates (memory.py says why)
    app()


if __name__ == "__main__":  # `python -m app.cli`
    main()
