"""One graph unit: train on one skill (or an equal pair), graph.runs.repeats times, and record every
skill's loss."""

from skillmix.jobs import start_log, write_parquet

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.runs import run_graph_unit

p = snakemake.params
curve = run_graph_unit(
    p.model,
    p.runs,
    p.eval,
    p.unit,
    snakemake.input.manifest,
    snakemake.input.train,
    snakemake.input.val,
    source_cfg=p.source,
)
write_parquet(curve, snakemake.output.curve)
