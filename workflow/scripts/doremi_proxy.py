"""DoReMi's proxy run: Group DRO against the reference run; writes the averaged domain weights."""

from skillmix.infra.warm import run_workflow_job

p = snakemake.params
run_workflow_job(
    snakemake,
    "skillmix.mixing.doremi_proxy:doremi_proxy_job",
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
)
