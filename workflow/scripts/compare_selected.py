"""Side by side: the target metrics of training on the LESS selection and on the random one."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.stamps import check_stamps  # noqa: E402
from skillmix.plotting import plot_target_comparison  # noqa: E402

# both selections trained and evaluated with the settings the config gives now
check_stamps({path: snakemake.params.expect for path in snakemake.input.metrics}, "evaluated selections")
summary = pd.concat([pd.read_parquet(p) for p in snakemake.input.metrics], ignore_index=True)
means = summary.groupby("selection", sort=False)[["loss", "accuracy"]].mean()
log.info("mean target metrics:\n%s", means.to_string())
write_parquet(summary, snakemake.output.summary)
plot_target_comparison(summary, snakemake.output.plot, "target metrics after training on each selection")
