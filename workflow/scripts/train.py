"""Train one run (a strategy) on the sliced skills; write the model and its histories."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from pathlib import Path

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.processes import job_processes, launch
from skillmix.mixing.job import train_job

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
graph = snakemake.input.get("graph")
launch(
    train_job,
    dict(
        strategy=p.strategy,
        manifest=snakemake.input.manifest,
        train=list(snakemake.input.train),
        val=list(snakemake.input.val),
        model_cfg=p.model,
        train_cfg=p.train,
        eval_cfg=p.eval,
        strategy_cfg=p.strategy_settings,
        graph_dir=str(Path(graph).parent) if graph else None,
        source_cfg=p.source,
        resume=p.resume,
        outputs=dict(snakemake.output.items()),
        stamp=p.stamp,
        mixture=snakemake.input.get("mixture"),
    ),
    job_processes(snakemake.resources.processes, snakemake.resources.gpu),
    snakemake.threads,
)
