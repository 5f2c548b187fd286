"""LESS warm-up: LoRA training on a random fraction of the pool, one checkpoint per epoch."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.processes import job_processes, launch

p = snakemake.params
launch(
    "skillmix.less.warmup:warmup_job",
    dict(
        pool=snakemake.input.pool,
        model_cfg=p.model,
        lora_cfg=p.lora,
        warmup_cfg=p.warmup,
        checkpoints=list(snakemake.output.checkpoints),
        names=list(p.names),
        resume=p.resume,
        outputs=dict(snakemake.output.items()),
    ),
    job_processes(snakemake.resources.processes or None, snakemake.resources.gpu),
    snakemake.threads,
)
