"""Train on a selection (LESS or random) with the warm-up recipe; track the target along the way."""

from skillmix.infra.inputs import based_on
from skillmix.infra.warm import run_workflow_job

p = snakemake.params
run_workflow_job(
    snakemake,
    "skillmix.selection.train_selected:train_selected_job",
    dict(
        selected=snakemake.input.selected,
        evaluation=snakemake.input.evaluation,
        model_cfg=based_on(p.model, snakemake.input.base),
        lora_cfg=p.lora,
        warmup_cfg=p.warmup,
        train_cfg=p.train,
        eval_cfg=p.eval,
        resume=p.resume,
        outputs=dict(snakemake.output.items()),
        stamp=p.stamp,
    ),
)
