"""Train one run (a strategy) on the sliced skills; write the model and its histories."""

from pathlib import Path

from skillmix.infra.warm import run_workflow_job

p = snakemake.params
graph = snakemake.input.get("graph")
run_workflow_job(
    snakemake,
    "skillmix.mixing.job:train_job",
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
)
