"""LESS influence of every candidate on the target, streamed over the datastore shards."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.stamps import check_stamps  # noqa: E402
from skillmix.selection.influence import read_weights, score_datastore  # noqa: E402

inp, ckpts = snakemake.input, snakemake.params.checkpoints
# every shard made with the settings the config gives now (not left from an interrupted run)
check_stamps(
    {
        path: snakemake.params.expect[s]
        for c in ckpts
        for s in ("candidates", "target")
        for path in inp[f"{s}_index_{c}"]
    },
    "gradient datastore shards",
)
scores = score_datastore(
    pd.read_parquet(inp.pool),
    {c: inp[f"candidates_{c}"] for c in ckpts},
    {c: inp[f"candidates_index_{c}"] for c in ckpts},
    {c: inp[f"target_{c}"] for c in ckpts},
    {c: inp[f"target_index_{c}"] for c in ckpts},
    read_weights(inp.weights),
    chunk_rows=snakemake.params.chunk_rows,
    match=snakemake.params.match,
    per_example=snakemake.params.per_example,
)
log.info("scored %d candidates; status counts: %s", len(scores), scores["status"].value_counts().to_dict())
write_parquet(scores, snakemake.output.scores)
