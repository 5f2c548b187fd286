"""RegMix: one proxy run on one sampled mixture; writes its validation curve."""

from skillmix.infra.warm import run_workflow_job

p = snakemake.params
run_workflow_job(
    snakemake,
    "skillmix.mixing.regmix_proxy:regmix_proxy_job",
    dict(
        manifest=snakemake.input.manifest,
        train=list(snakemake.input.train),
        val=list(snakemake.input.val),
        mixtures=snakemake.input.mixtures,
        run=int(p.run),
        model_cfg=p.model,
        train_cfg=p.train,
        eval_cfg=p.eval,
        regmix_cfg=p.regmix,
        outputs=dict(snakemake.output.items()),
        stamp=p.stamp,
        source_cfg=p.source,
    ),
)
