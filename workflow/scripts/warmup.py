"""LESS warm-up: LoRA training on a random fraction of the pool, one checkpoint per epoch."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.inputs import based_on
from skillmix.infra.processes import job_processes, launch
from skillmix.selection.warmup import warmup_job

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
launch(
    warmup_job,
    dict(
        pool=snakemake.input.pool,
        model_cfg=based_on(p.model, snakemake.input.base),
        lora_cfg=p.lora,
        warmup_cfg=p.warmup,
        checkpoints=list(snakemake.output.checkpoints),
        names=list(p.names),
        resume=p.resume,
        outputs=dict(snakemake.output.items()),
    ),
    job_processes(snakemake.resources.processes, snakemake.resources.gpu),
    snakemake.threads,
)
