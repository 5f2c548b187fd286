"""Graph units: train on one skill (or an equal pair), graph.runs.repeats times, and record every
skill's loss. One unit (rule graph_run: output `curve`) or, with graph.runs.units_per_job above 1,
the units of a batch one after the other (rule graph_run_batch: one curve per unit in the folder
`curves`, the same curves as one unit a job)."""

from pathlib import Path

from skillmix.infra.warm import run_workflow_job

p = snakemake.params
batched = "units" in p.keys()
units = list(p.units) if batched else [p.unit]
if batched:
    outputs = [str(Path(snakemake.output.curves) / f"{unit}.parquet") for unit in units]
else:
    outputs = [snakemake.output.curve]
run_workflow_job(
    snakemake,
    "skillmix.graph.unit_runs:graph_run_job",
    dict(
        units=units,
        manifest=snakemake.input.manifest,
        train=list(snakemake.input.train),
        val=snakemake.input.val,
        outputs=outputs,
        model_cfg=p.model,
        runs_cfg=p.runs,
        eval_cfg=p.eval,
        source_cfg=p.source,
        stamp=p.stamp,
    ),
)
