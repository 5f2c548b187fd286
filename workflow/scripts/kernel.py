"""The eNTK kernels of the task for every configured formula (one pass of Jacobians)."""

import json

import pandas as pd

from skillmix.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads)

from skillmix.kernel_task import compute_kernels, write_kernel_file  # noqa: E402

p = snakemake.params
words = json.loads(open(snakemake.input.words).read())
kernels = compute_kernels(
    p.model,
    pd.read_parquet(snakemake.input.task),
    words,
    p.formulas,
    p.subset,
    p.row_block,
    p.col_block,
    p.binary,
)
for formula, path in zip(p.formulas, snakemake.output.kernels, strict=True):
    write_kernel_file(kernels[formula], path)
