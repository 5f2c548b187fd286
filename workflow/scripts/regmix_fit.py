"""RegMix: fit the proxy runs' losses from their mixtures and search the best mixture."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.data.slicing import read_manifest
from skillmix.infra.stamps import check_stamps
from skillmix.mixing.regmix_fit import regmix_fit_job

p = snakemake.params
table = snakemake.input.get("table")
runs = [] if table else list(snakemake.input.runs)
# every proxy run made with the settings the config gives now
check_stamps({path: p.expect for path in runs}, "RegMix proxy runs")
regmix_fit_job(
    snakemake.input.get("mixtures"),
    runs,
    regmix_cfg=p.regmix,
    train_cfg=p.train,
    # the natural mixture: every skill's training examples
    skills={s["name"]: s["counts"]["train"] for s in read_manifest(snakemake.input.manifest)["skills"]},
    outputs=dict(snakemake.output.items()),
    proxy_table=table,
)
