"""DoReMi's proxy run: Group DRO against the reference run; writes the averaged domain weights."""

from skillmix.infra.warm import run_job

p = snakemake.params
run_job(
    dict(
        target="skillmix.mixing.doremi_proxy:doremi_proxy_job",
        kwargs=dict(
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
        log=snakemake.log[0],
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
        processes=snakemake.resources.processes,
    ),
    snakemake.config["jobs"],
)
