"""Compare the training strategies: a summary table and a plot of mean validation curves."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.skillit.results import compare_runs

compare_runs(snakemake.input.metrics, snakemake.output.summary, snakemake.output.plot)
