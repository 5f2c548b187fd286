"""The candidate pool of LESS selection: the training slices of the pool skills, in one table."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.selection.pool import pool_frame  # noqa: E402

pool = pool_frame(snakemake.input.manifest, snakemake.input.train, snakemake.params.skills)
log.info("candidate pool: %d examples of %d skills", len(pool), pool["skill"].nunique())
write_parquet(pool, snakemake.output.pool)
