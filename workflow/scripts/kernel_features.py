"""One shard of the kernel task's label-word gradient features (its contiguous rows of the task)."""

import json

import pandas as pd

from skillmix.infra.inputs import based_on
from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import parse_scatteritem, shard_range  # noqa: E402
from skillmix.kernel.task_kernels import task_features, write_arrays  # noqa: E402

p = snakemake.params
task = pd.read_parquet(snakemake.input.task)
rows = shard_range(len(task), *parse_scatteritem(p.shard))
arrays = task_features(
    based_on(p.model, snakemake.input.base),
    task,
    json.loads(open(snakemake.input.words).read()),
    p.formulas,
    p.subset,
    p.binary,
    rows,
    p.projection["dim"],
    p.projection["seed"],
)
write_arrays(arrays, snakemake.output.features, stamp=p.stamp)
