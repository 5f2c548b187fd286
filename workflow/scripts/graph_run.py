"""One graph-learning run: train on one skill (or an equal pair) and record every skill's loss."""

from skillmix.jobs import start_log, write_parquet

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.runs import prepare_graph_unit

p = snakemake.params
run = prepare_graph_unit(
    p.model,
    p.runs,
    p.eval,
    p.unit,
    snakemake.input.manifest,
    snakemake.input.train,
    snakemake.input.val,
    source_cfg=p.source,
)
result = run.train()
curve = result.val_curve[["step", "skill", "loss"]].assign(unit=p.unit)
write_parquet(curve[["unit", "step", "skill", "loss"]], snakemake.output.curve)
