"""Compare the training strategies: a summary table and a plot of mean validation curves."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.stamps import check_stamps
from skillmix.mixing.comparison import compare_costs_and_weights, compare_runs, graph_cost

p = snakemake.params
# every run trained and evaluated with the settings the config gives now
check_stamps(
    {path: p.expect[run] for run, path in zip(p.runs, snakemake.input.metrics, strict=True)},
    "evaluated training runs",
)
compare_runs(snakemake.input.metrics, snakemake.output.summary, snakemake.output.plot)
compare_costs_and_weights(
    p.runs,
    {
        "mixture": list(snakemake.input.mixture),
        "skill_counts": list(snakemake.input.skill_counts),
        "metrics": list(snakemake.input.job_metrics),
    },
    dict(snakemake.output.items()),
    {run: list(snakemake.input[key]) for run, key in p.stage_metrics.items()},
    graph_cost(p.runs, p.graph, snakemake.input.manifest),
)
