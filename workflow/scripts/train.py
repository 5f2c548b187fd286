"""Train one run (a strategy) on the sliced skills; write the model and its histories."""

from pathlib import Path

from skillmix.infra.warm import run_job

p = snakemake.params
graph = snakemake.input.get("graph")
run_job(
    dict(
        target="skillmix.mixing.job:train_job",
        kwargs=dict(
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
        log=snakemake.log[0],
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
        processes=snakemake.resources.processes,
    ),
    snakemake.config["jobs"],
)
