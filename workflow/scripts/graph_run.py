"""One graph unit: train on one skill (or an equal pair), graph.runs.repeats times, and record every
skill's loss."""

from skillmix.infra.jobs import start_log, write_parquet

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.unit_runs import graph_unit_curve

p = snakemake.params
curve = graph_unit_curve(
    p.unit,
    snakemake.input.manifest,
    snakemake.input.train,
    snakemake.input.val,
    model_cfg=p.model,
    runs_cfg=p.runs,
    eval_cfg=p.eval,
    source_cfg=p.source,
)
write_parquet(curve, snakemake.output.curve, stamp=p.stamp)
