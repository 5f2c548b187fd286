"""LESS warm-up: LoRA training on a random fraction of the pool, one checkpoint per epoch."""

from skillmix.infra.inputs import based_on
from skillmix.infra.warm import run_workflow_job

p = snakemake.params
run_workflow_job(
    snakemake,
    "skillmix.selection.warmup:warmup_job",
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
)
