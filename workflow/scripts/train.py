"""Train one run (a strategy) on the sliced skills; write the model and its histories."""

from pathlib import Path

from skillmix.infra.jobs import JobClock, start_log, write_json, write_parquet

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.engine.modeling import save_model
from skillmix.skillit.runs import prepare_run

p = snakemake.params
graph = snakemake.input.get("graph")
run = prepare_run(
    p.strategy,
    snakemake.input.manifest,
    snakemake.input.train,
    snakemake.input.val,
    model_cfg=p.model,
    train_cfg=p.train,
    eval_cfg=p.eval,
    strategy_cfg=p.strategy_settings,
    graph_dir=Path(graph).parent if graph else None,
    source_cfg=p.source,
)
clock = JobClock(run.runtime.device)
result = run.train(resume_dir=p.resume)
save_model(run.model, run.tokenizer, snakemake.output.model)
write_parquet(result.steps, snakemake.output.steps)
write_parquet(result.skill_counts, snakemake.output.skill_counts)
write_parquet(result.val_curve, snakemake.output.val_curve)
write_parquet(result.mixtures, snakemake.output.mixture)
write_json(clock.metrics(resumed_from=result.resumed_from, steps=p.train["steps"]), snakemake.output.metrics)
