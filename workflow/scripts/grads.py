"""One shard of the gradient datastore: projected per-example gradient features at one checkpoint."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.inputs import based_on
from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.processes import job_processes, launch  # noqa: E402
from skillmix.selection.datastore import shard_job  # noqa: E402

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
launch(
    shard_job,
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
    job_processes(snakemake.resources.processes, snakemake.resources.gpu),
    snakemake.threads,
)
