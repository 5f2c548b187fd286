"""What each selection method's own stages cost (LESS's warm-up, datastore and influence beside
RDS+'s hidden states and scores), from the stage jobs' benchmark files."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_html_table, write_parquet  # noqa: E402
from skillmix.selection.evaluation import selection_costs  # noqa: E402

p = snakemake.params
benchmarks = {}
for key, (name, stage) in p.stages.items():
    benchmarks.setdefault(name, {})[stage] = list(snakemake.input[key])
costs = selection_costs(p.selections, benchmarks)
log.info("selection costs:\n%s", costs.to_string(index=False))
write_parquet(costs, snakemake.output.costs)
write_html_table(
    costs, snakemake.output.table, "What each selection method's stages cost (seconds, MB)", digits=1
)
