"""RegMix: one proxy run on one sampled mixture; writes its validation curve."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.mixing.regmix_proxy import regmix_proxy_job

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
regmix_proxy_job(
    snakemake.input.manifest,
    list(snakemake.input.train),
    list(snakemake.input.val),
    snakemake.input.mixtures,
    int(p.run),
    model_cfg=p.model,
    train_cfg=p.train,
    eval_cfg=p.eval,
    regmix_cfg=p.regmix,
    outputs=dict(snakemake.output.items()),
    stamp=p.stamp,
    source_cfg=p.source,
)
