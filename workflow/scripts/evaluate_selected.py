"""Evaluate a model trained on a selection on the target's evaluation examples, per skill."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.stamps import read_stamp  # noqa: E402
from skillmix.plotting import plot_skill_curves  # noqa: E402
from skillmix.selection.evaluation import evaluate_target  # noqa: E402

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
metrics = evaluate_target(
    snakemake.input.model,
    p.model,
    pd.read_parquet(snakemake.input.evaluation),
    p.eval["batch_size"],
)
metrics.insert(0, "selection", p.selection)
log.info("target metrics of %s:\n%s", p.selection, metrics.to_string(index=False))
# the settings of the training it evaluates and its own, for compare_selected to check
stamp = {"train": read_stamp(snakemake.input.steps), "evaluate": p.stamp}
write_parquet(metrics, snakemake.output.metrics, stamp=stamp)
curve = pd.read_parquet(snakemake.input.val_curve)
plot_skill_curves(
    curve,
    snakemake.output.plot,
    f"trained on the {p.selection} selection: target accuracy {metrics['accuracy'].mean():.3f}, "
    f"loss {metrics['loss'].mean():.3f}",
)
