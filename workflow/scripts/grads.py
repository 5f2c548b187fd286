"""One shard of the gradient datastore: projected per-example gradient features at one checkpoint."""

from skillmix.infra.inputs import based_on
from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.less.datastore import build_shard  # noqa: E402

p = snakemake.params
build_shard(
    p.feature,
    snakemake.input.checkpoint,
    snakemake.input.examples,
    p.shard,
    dict(zip(p.dims, snakemake.output.features, strict=True)),
    snakemake.output.index,
    snakemake.output.info,
    model_cfg=based_on(p.model, snakemake.input.base),
    lora_cfg=p.lora,
    grads_cfg=p.grads,
)
