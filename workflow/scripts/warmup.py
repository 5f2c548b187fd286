"""LESS warm-up: LoRA training on a random fraction of the pool, one checkpoint per epoch."""

from skillmix.infra.inputs import based_on
from skillmix.infra.warm import run_job

p = snakemake.params
run_job(
    dict(
        target="skillmix.selection.warmup:warmup_job",
        kwargs=dict(
            pool=snakemake.input.pool,
            model_cfg=based_on(p.model, snakemake.input.base),
            lora_cfg=p.lora,
            warmup_cfg=p.warmup,
            checkpoints=list(snakemake.output.checkpoints),
            names=list(p.names),
            resume=p.resume,
            outputs=dict(snakemake.output.items()),
        ),
        log=snakemake.log[0],
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
        processes=snakemake.resources.processes,
    ),
    snakemake.config["jobs"],
)
