"""Kernel solvers on every formula's kernels: accuracy on val and test, next to the initial model."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_html_table, write_parquet  # noqa: E402
from skillmix.kernel.finetuning import initial_accuracy, side_by_side  # noqa: E402
from skillmix.kernel.task_kernels import read_arrays, solve_kernels  # noqa: E402
from skillmix.plotting import plot_kernel_solutions  # noqa: E402

p = snakemake.params
tables = [initial_accuracy(snakemake.input.kernels[0])]
tables += [
    solve_kernels(
        read_arrays(path), formula, p.solvers, p.reg, p.f0, p.gamma, p.asym_mix, f0_scaling=p.f0_scaling
    )
    for formula, path in zip(p.formulas, snakemake.input.kernels, strict=True)
]
table = pd.concat(tables, ignore_index=True)
log.info("kernel solutions:\n%s", table.to_string(index=False))
finetuned = pd.concat([pd.read_parquet(p) for p in snakemake.input.finetune], ignore_index=True)
comparison = side_by_side(table, finetuned)
log.info("kernel solvers next to fine-tuning:\n%s", comparison.to_string(index=False))
write_parquet(table, snakemake.output.table)
write_parquet(comparison, snakemake.output.comparison)
plot_kernel_solutions(table, snakemake.output.plot, comparison)
write_html_table(comparison, snakemake.output.table_html, "Kernel solvers next to fine-tuning (accuracy)")
