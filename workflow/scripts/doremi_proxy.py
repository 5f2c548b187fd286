"""DoReMi's proxy run: Group DRO against the reference run; writes the averaged domain weights."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.processes import job_processes, launch
from skillmix.mixing.doremi_proxy import doremi_proxy_job

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
launch(
    doremi_proxy_job,
    dict(
        manifest=snakemake.input.manifest,
        train=list(snakemake.input.train),
        val=list(snakemake.input.val),
        model_cfg=p.model,
        train_cfg=p.train,
        eval_cfg=p.eval,
        doremi_cfg=p.doremi,
        reference_dir=snakemake.input.reference,
        outputs=dict(snakemake.output.items()),
        stamp=p.stamp,
        resume=p.resume,
        source_cfg=p.source,
        # the reference run made with the settings the config gives now
        reference_stamps={snakemake.input.reference_steps: p.reference_stamp},
    ),
    job_processes(snakemake.resources.processes, snakemake.resources.gpu),
    snakemake.threads,
)
