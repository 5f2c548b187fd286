"""The eNTK kernels of every configured formula from the gathered feature shards."""

import json

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.stamps import check_stamps  # noqa: E402
from skillmix.kernel.task_kernels import kernels_from_features, read_arrays, write_arrays  # noqa: E402

p = snakemake.params
# every shard made with the settings the config gives now (not left from an interrupted run)
check_stamps({path: p.expect for path in snakemake.input.features}, "kernel feature shards")
kernels = kernels_from_features(
    pd.read_parquet(snakemake.input.task),
    json.loads(open(snakemake.input.words).read()),
    [read_arrays(path) for path in snakemake.input.features],
    p.formulas,
    p.row_block,
    p.col_block,
)
for formula, path in zip(p.formulas, snakemake.output.kernels, strict=True):
    write_arrays(kernels[formula], path)
