"""Graph units: train on one skill (or an equal pair), graph.runs.repeats times, and record every
skill's loss. One unit (rule graph_run: output `curve`) or, with graph.runs.units_per_job above 1,
the units of a batch one after the other (rule graph_run_batch: one curve per unit in the folder
`curves`, the same curves as one unit a job)."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from pathlib import Path

from skillmix.infra.jobs import start_log, write_parquet

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.unit_runs import graph_unit_curve
from skillmix.graph.units import unit_slugs

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
batched = "units" in p.keys()
units = list(p.units) if batched else [p.unit]
train_by_slug = {Path(path).stem: path for path in snakemake.input.train}
for unit in units:
    curve = graph_unit_curve(
        unit,
        snakemake.input.manifest,
        [train_by_slug[slug] for slug in unit_slugs(unit)],
        snakemake.input.val,
        model_cfg=p.model,
        runs_cfg=p.runs,
        eval_cfg=p.eval,
        source_cfg=p.source,
    )
    out = Path(snakemake.output.curves) / f"{unit}.parquet" if batched else snakemake.output.curve
    write_parquet(curve, out, stamp=p.stamp)
    log.info("unit %s: %d rows", unit, len(curve))
