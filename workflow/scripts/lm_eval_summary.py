"""All lm-eval results in one table: model, task, metric, value, stderr, n."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402

summary = pd.concat([pd.read_parquet(path) for path in snakemake.input], ignore_index=True)
log.info("lm-eval results:\n%s", summary.to_string(index=False))
write_parquet(summary, snakemake.output.summary)
