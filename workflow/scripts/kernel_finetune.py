"""Prompt-based fine-tuning on the kernel task's k-shot split: what the kernels should predict."""

import json

import pandas as pd

from skillmix.infra.inputs import based_on
from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.kernel.finetuning import finetune  # noqa: E402

p = snakemake.params
ft = p.finetune
metrics, steps = finetune(
    based_on(p.model, snakemake.input.base),
    pd.read_parquet(snakemake.input.task),
    json.loads(open(snakemake.input.words).read()),
    p.optimizer,
    steps=ft["steps"],
    lr=ft["lr_sgd"] if p.optimizer == "sgd" else ft["lr_adam"],
    seed=ft["seed"],
    subset=p.subset,
)
log.info("fine-tuned with %s:\n%s", p.optimizer, metrics.to_string(index=False))
write_parquet(metrics, snakemake.output.metrics)
write_parquet(steps, snakemake.output.steps)
