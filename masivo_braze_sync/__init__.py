"""masivo-braze-sync: keep each Masivo account's Braze workspace in step with its loyalty data.

The package is the pipeline's core and holds no Prefect imports. The data path, stage by stage:

    db/        source tables, the sync's own schema, migrations   (source)
    capture    trigger-fed change log read in commit-safe order   (change capture)
    extract    bounded polars reads of changed rows               (extract)
    entities/  per-entity validate + transform into Braze objects (validate, transform)
    batch      packing objects into requests within Braze limits  (batch)
    braze/     the Braze REST client, endpoint allow-list, pacing (deliver)
    ledger     batches, per-request delivery ledger, cursors      (deliver, commit)
    pipeline   one account's sync, stage by stage                 (all of the above)

`flows/` and `tasks/` at the top of the repository only orchestrate these with Prefect.
"""

__version__ = "0.1.0"
