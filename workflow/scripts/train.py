"""Train one run (a strategy) on the sliced skills; write the model and its histories."""

from skillmix.jobs import JobClock, start_log, write_json, write_parquet

log = start_log(snakemake.log[0], snakemake.threads)

from skillmix.modeling import save_model  # noqa: E402
from skillmix.runs import prepare_run  # noqa: E402  (after the log is set up)

p = snakemake.params
run = prepare_run(
    p.model, p.train, p.eval, p.strategy, snakemake.input.manifest, snakemake.input.train, snakemake.input.val
)
clock = JobClock(run.runtime.device)
result = run.train(checkpoint_dir=p.checkpoints)
save_model(run.model, run.tokenizer, snakemake.output.model)
write_parquet(result.steps, snakemake.output.steps)
write_parquet(result.skill_counts, snakemake.output.skill_counts)
write_parquet(result.val_curve, snakemake.output.val_curve)
write_json(clock.metrics(resumed_from=result.resumed_from, steps=p.train["steps"]), snakemake.output.metrics)
