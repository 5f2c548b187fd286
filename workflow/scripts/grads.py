"""One shard of the gradient datastore: projected per-example gradient features at one checkpoint."""

from skillmix.infra.inputs import based_on
from skillmix.infra.warm import run_job

p = snakemake.params
run_job(
    dict(
        target="skillmix.selection.datastore:shard_job",
        kwargs=dict(
            feature=p.feature,
            checkpoint=snakemake.input.checkpoint,
            examples=snakemake.input.examples,
            scatteritem=p.shard,
            dims=list(p.dims),
            features=list(snakemake.output.features),
            index=snakemake.output.index,
            info=snakemake.output.info,
            model_cfg=based_on(p.model, snakemake.input.base),
            lora_cfg=p.lora,
            grads_cfg=p.grads,
            stamp=p.stamp,
        ),
        log=snakemake.log[0],
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
        processes=snakemake.resources.processes,
    ),
    snakemake.config["jobs"],
)
