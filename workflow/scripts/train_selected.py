"""Train on a selection (LESS or random) with the warm-up recipe; track the target along the way."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.inputs import based_on
from skillmix.infra.processes import job_processes, launch
from skillmix.selection.train_selected import train_selected_job

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
launch(
    train_selected_job,
    dict(
        selected=snakemake.input.selected,
        evaluation=snakemake.input.evaluation,
        model_cfg=based_on(p.model, snakemake.input.base),
        lora_cfg=p.lora,
        warmup_cfg=p.warmup,
        train_cfg=p.train,
        eval_cfg=p.eval,
        resume=p.resume,
        outputs=dict(snakemake.output.items()),
        stamp=p.stamp,
    ),
    job_processes(snakemake.resources.processes, snakemake.resources.gpu),
    snakemake.threads,
)
