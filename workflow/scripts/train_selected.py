"""Train on a selection (LESS or random) with the warm-up recipe; track the target along the way."""

import pandas as pd

from skillmix.infra.jobs import JobClock, start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.engine.modeling import save_model  # noqa: E402
from skillmix.infra.jobs import write_json, write_parquet  # noqa: E402
from skillmix.less.targets import first_per_skill  # noqa: E402
from skillmix.less.warmup import prepare_epochs  # noqa: E402

p = snakemake.params
evaluation = first_per_skill(pd.read_parquet(snakemake.input.evaluation), p.eval["max_examples_per_skill"])
recipe = dict(p.warmup, eval_every=p.train["eval_every"])
run = prepare_epochs(
    p.model,
    p.lora,
    recipe,
    pd.read_parquet(snakemake.input.selected),
    evaluation,
    epochs=p.train["epochs"] or p.warmup["epochs"],
    eval_batch_size=p.eval["batch_size"],
)
clock = JobClock(run.runtime.device)
result = run.train(resume_dir=p.resume)
save_model(run.model, run.tokenizer, snakemake.output.model)
write_parquet(result.steps, snakemake.output.steps)
write_parquet(result.val_curve, snakemake.output.val_curve)
write_json(
    clock.metrics(resumed_from=result.resumed_from, steps=run.settings.steps), snakemake.output.metrics
)
