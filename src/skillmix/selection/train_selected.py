"""Training on a selection (LESS's, the random baseline's, any method's): the warm-up's epoch
recipe on the selected examples, tracking the target's evaluation examples along the way."""

from __future__ import annotations

from typing import Any

import pandas as pd

from skillmix.selection.epochs import lora_model, prepare_epochs


def train_selected_job(
    selected: str,
    evaluation: str,
    *,
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    warmup_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    eval_cfg: dict[str, Any],
    resume: str | None,
    outputs: dict[str, str],
    stamp: dict[str, Any] | None = None,
) -> None:
    """The `train_selected` rule's job (in each of its processes): the warm-up recipe on a selection,
    tracking the evaluation set; `outputs` (model, steps, val_curve, metrics) from the first process."""
    from skillmix.engine.distributed import unsharded
    from skillmix.engine.modeling import save_model
    from skillmix.infra import processes
    from skillmix.infra.jobs import JobClock, write_json, write_parquet
    from skillmix.selection.targets import first_per_skill

    held_out = first_per_skill(pd.read_parquet(evaluation), eval_cfg["max_examples_per_skill"])
    run = prepare_epochs(
        model_cfg,
        lora_cfg,
        dict(warmup_cfg, eval_every=train_cfg["eval_every"]),
        pd.read_parquet(selected),
        held_out,
        epochs=train_cfg["epochs"] or warmup_cfg["epochs"],
        eval_batch_size=eval_cfg["batch_size"],
    )
    clock = JobClock(run.runtime.device)
    result = run.train(resume_dir=resume)
    model = unsharded(run.model, lambda: lora_model(model_cfg, lora_cfg)[0])
    if not processes.is_main():
        return
    save_model(model, run.tokenizer, outputs["model"], model_cfg)
    write_parquet(result.steps, outputs["steps"], stamp=stamp)
    write_parquet(result.val_curve, outputs["val_curve"])
    metrics = clock.metrics(
        resumed_from=result.resumed_from, steps=run.settings.steps, processes=processes.world_size()
    )
    write_json(metrics, outputs["metrics"])
