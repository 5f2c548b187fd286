"""One shard of the gradient datastore: projected per-example gradient features at one checkpoint."""

from skillmix.infra.inputs import based_on
from skillmix.infra.warm import run_workflow_job

p = snakemake.params
run_workflow_job(
    snakemake,
    "skillmix.selection.datastore:shard_job",
    dict(
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
)
