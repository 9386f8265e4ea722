"""The sync schema: change log with capture triggers, cursors, batches, ledger, rejects, runs.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "braze_sync"

# table -> expression giving the changed row's key, from the transition table alias `r`
CAPTURED = {
    "customers": "r.id",
    "events": "r.id",
    "orders": "r.id",
    "order_items": "jsonb_build_array(r.order_id, r.line_no)::text",
    "audiences": "r.id",
    "audience_members": "jsonb_build_array(r.audience_id, r.customer_id)::text",
    "braze_integrations": "r.account_id",
}
# Events are immutable facts: only their insertion is a change worth sending.
INSERT_ONLY = {"events"}


def _capture_sql(table: str, key: str) -> str:
    """Statement-level triggers over transition tables: one INSERT ... SELECT per statement,
    so a bulk write costs one log insert per statement instead of a plpgsql call per row."""
    ops = ("INSERT",) if table in INSERT_ONLY else ("INSERT", "UPDATE", "DELETE")
    out = []
    for tg_op in ops:
        rows = "old_rows" if tg_op == "DELETE" else "new_rows"
        old_values = "to_jsonb(r)" if tg_op == "DELETE" else "NULL::jsonb"
        fn = f"{S}.capture_{table}_{tg_op.lower()}"
        out.append(f"""
CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT r.account_id, '{table}', {key}, '{tg_op[0]}', {old_values} FROM {rows} r;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS braze_sync_capture_{tg_op.lower()} ON public.{table};
CREATE TRIGGER braze_sync_capture_{tg_op.lower()} AFTER {tg_op} ON public.{table}
  REFERENCING {"OLD" if tg_op == "DELETE" else "NEW"} TABLE AS {rows}
  FOR EACH STATEMENT EXECUTE FUNCTION {fn}();""")
    return "\n".join(out)


def upgrade() -> None:
    op.execute(f"""
CREATE TABLE {S}.change_log (
  id          bigserial PRIMARY KEY,
  txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
  account_id  text NOT NULL,
  entity      text NOT NULL,
  entity_key  text NOT NULL,
  op          char(1) NOT NULL,
  old_values  jsonb,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_log_read ON {S}.change_log (entity, account_id, txid, id);

CREATE TABLE {S}.cursors (
  consumer    text NOT NULL,
  account_id  text NOT NULL,
  txid        xid8 NOT NULL DEFAULT '0',
  log_id      bigint NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, account_id)
);

CREATE TABLE {S}.batches (
  id           bigserial PRIMARY KEY,
  consumer     text NOT NULL,
  account_id   text NOT NULL,
  from_txid    xid8 NOT NULL,
  from_id      bigint NOT NULL,
  to_txid      xid8 NOT NULL,
  to_id        bigint NOT NULL,
  status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'committed')),
  log_rows     integer NOT NULL DEFAULT 0,
  attempts     integer NOT NULL DEFAULT 1,
  created_at   timestamptz NOT NULL DEFAULT now(),
  committed_at timestamptz
);
-- at most one open batch per consumer and account: a crashed run's batch is resumed, never doubled
CREATE UNIQUE INDEX batches_one_open ON {S}.batches (consumer, account_id) WHERE status = 'open';

CREATE TABLE {S}.deliveries (
  id                  bigserial PRIMARY KEY,
  batch_id            bigint NOT NULL REFERENCES {S}.batches (id) ON DELETE CASCADE,
  account_id          text NOT NULL,
  consumer            text NOT NULL,
  seq                 integer NOT NULL,
  endpoint            text NOT NULL,
  keys                text[] NOT NULL,
  status              text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sending', 'delivered', 'rejected', 'unknown')),
  http_status         integer,
  attempts            integer NOT NULL DEFAULT 0,
  possibly_duplicated boolean NOT NULL DEFAULT false,
  created_at          timestamptz NOT NULL DEFAULT now(),
  completed_at        timestamptz
);
CREATE INDEX deliveries_batch ON {S}.deliveries (batch_id, status);
CREATE INDEX deliveries_account ON {S}.deliveries (account_id, consumer, created_at);

CREATE TABLE {S}.rejected_rows (
  id          bigserial PRIMARY KEY,
  account_id  text NOT NULL,
  consumer    text NOT NULL,
  entity_key  text NOT NULL,
  stage       text NOT NULL,
  reason      text NOT NULL,
  batch_id    bigint,
  created_at  timestamptz NOT NULL DEFAULT now(),
  retried_at  timestamptz
);
CREATE INDEX rejected_rows_account ON {S}.rejected_rows (account_id, consumer, created_at);

CREATE TABLE {S}.run_summaries (
  id                  bigserial PRIMARY KEY,
  flow_run_id         text,
  consumer            text NOT NULL,
  account_id          text NOT NULL,
  status              text NOT NULL,
  rows_read           integer NOT NULL DEFAULT 0,
  objects_sent        integer NOT NULL DEFAULT 0,
  requests            integer NOT NULL DEFAULT 0,
  rejected            integer NOT NULL DEFAULT 0,
  skipped             integer NOT NULL DEFAULT 0,
  retries             integer NOT NULL DEFAULT 0,
  rate_limited        integer NOT NULL DEFAULT 0,
  possibly_duplicated integer NOT NULL DEFAULT 0,
  seconds             double precision NOT NULL DEFAULT 0,
  error               text,
  started_at          timestamptz NOT NULL DEFAULT now(),
  finished_at         timestamptz
);
CREATE INDEX run_summaries_account ON {S}.run_summaries (account_id, consumer, started_at);
""")
    for table, key in CAPTURED.items():
        op.execute(_capture_sql(table, key))


def downgrade() -> None:
    for table in CAPTURED:
        for tg_op in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS braze_sync_capture_{tg_op} ON public.{table}")
    op.execute(f"DROP SCHEMA {S} CASCADE")
