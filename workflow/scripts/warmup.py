"""LESS warm-up: LoRA training on a random fraction of the pool, one checkpoint per epoch."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_json, write_parquet  # noqa: E402
from skillmix.less.warmup import warmup_from_pool  # noqa: E402

p = snakemake.params
result, weights, mean_lrs, subset = warmup_from_pool(
    p.model,
    p.lora,
    p.warmup,
    pd.read_parquet(snakemake.input.pool),
    snakemake.output.checkpoints,
    resume_dir=p.resume,
)
write_parquet(subset, snakemake.output.subset)
write_parquet(result.steps, snakemake.output.steps)
write_json(
    {
        "weights": dict(zip(p.names, weights, strict=True)),
        "mean_lr": dict(zip(p.names, mean_lrs, strict=True)),
        "resumed_from": result.resumed_from,
    },
    snakemake.output.weights,
)
