"""The target set of LESS selection (gradients) and its evaluation examples."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.selection.targets import build_targets  # noqa: E402

target, evaluation = build_targets(
    snakemake.params.target, snakemake.input.get("val", []), snakemake.input.get("test", [])
)
log.info(
    "target: %d examples in %d skills; evaluation: %d examples",
    len(target),
    target["skill"].nunique(),
    len(evaluation),
)
write_parquet(target, snakemake.output.target)
write_parquet(evaluation, snakemake.output.evaluation)
