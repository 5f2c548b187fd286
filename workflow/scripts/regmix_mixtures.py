"""RegMix: sample the proxy runs' mixtures around the natural mixture."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.mixing.regmix_fit import regmix_mixtures_job

p = snakemake.params
regmix_mixtures_job(
    snakemake.input.manifest,
    regmix_cfg=p.regmix,
    train_cfg=p.train,
    outputs=dict(snakemake.output.items()),
)
