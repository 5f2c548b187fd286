"""Prompt-based fine-tuning on the kernel task (the kernel_finetune job), what the kernels should
predict, and the comparisons of the kernel_solve job: the initial model's accuracy, and each
solver next to fine-tuning with the optimizer its formula describes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from skillmix.engine.gradient_units import select_parameters, untie_head
from skillmix.engine.modeling import load_model
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.kernel import kernels
from skillmix.kernel.task import SPLITS
from skillmix.kernel.task_kernels import read_arrays

FT_OPTIMIZERS = ("sgd", "adam")
# the fine-tuning each kernel formula describes: SGD for the eNTK, Adam (≈ SignGD early) for the sign kernels
FORMULA_OPTIMIZER = {"sgd": "sgd", "signgd": "adam", "asymmetric_signgd": "adam"}


def finetune(
    model_cfg: dict[str, Any],
    task: pd.DataFrame,
    words: Sequence[str],
    optimizer: str,
    steps: int,
    lr: float,
    seed: int,
    subset: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompt-based fine-tuning on the task's training rows, the comparison for the kernels.

    Full-batch steps of `optimizer` ("sgd" or "adam") on the cross-entropy of the label-word
    logits at the answer position, over the same parameter subset as the kernel. Returns
    (accuracy and loss on val and test after training, the training loss per step).
    """
    model_cfg = complete("model", model_cfg)
    if optimizer not in FT_OPTIMIZERS:
        raise SkillmixInputError(
            f"kernel.finetune.optimizers: unknown {optimizer!r}; expected {FT_OPTIMIZERS}"
        )
    torch.manual_seed(seed)
    model, tokenizer = load_model({**model_cfg, "lora": {"enabled": False}})
    lw = kernels.label_words(tokenizer, words)
    max_length = model_cfg["max_length"]
    sets = {
        s: (
            kernels.prompt_ids(tokenizer, task.loc[task["split"] == s, "prompt"].tolist(), lw, max_length),
            torch.tensor(task.loc[task["split"] == s, "label"].to_numpy()),
        )
        for s in SPLITS
    }
    untie_head(model, subset)  # the kernel's parameters, also on a tied head
    params = list(select_parameters(model.named_parameters(), subset).values())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    model.eval()  # dropout off, as for the kernel
    ids, y = sets["train"]
    history = []
    for step in tqdm(range(1, steps + 1), mininterval=5.0, desc=f"fine-tuning ({optimizer})"):
        logits = torch.stack([kernels.label_logits(model, x, lw.ids) for x in ids])
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"optimizer": optimizer, "step": step, "loss": float(loss)})
    rows = []
    with torch.no_grad():
        for s in SPLITS[1:]:
            ids_s, y_s = sets[s]
            logits = torch.stack([kernels.label_logits(model, x, lw.ids) for x in ids_s])
            rows.append(
                {
                    "optimizer": optimizer,
                    "split": s,
                    "accuracy": kernels.accuracy(logits.argmax(dim=1).numpy(), y_s.numpy()),
                    "loss": float(torch.nn.functional.cross_entropy(logits, y_s)),
                    "steps": steps,
                    "lr": lr,
                    "n": len(y_s),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(history)


def side_by_side(solutions: pd.DataFrame, finetuned: pd.DataFrame) -> pd.DataFrame:
    """Per formula and split: each solver's accuracy next to fine-tuning with the matching optimizer."""
    solved = solutions[solutions["solver"] != "initial_model"]
    table = solved.pivot_table(index=["formula", "split"], columns="solver", values="accuracy", sort=False)
    table.columns = [f"{c}_accuracy" for c in table.columns]
    table = table.reset_index()
    ft = finetuned.set_index(["optimizer", "split"])["accuracy"]
    table["finetune_optimizer"] = table["formula"].map(FORMULA_OPTIMIZER)
    table["finetune_accuracy"] = [
        float(ft.get((o, s), float("nan")))
        for o, s in zip(table["finetune_optimizer"], table["split"], strict=True)
    ]
    return table


def initial_accuracy(path: str | os.PathLike) -> pd.DataFrame:
    """Accuracy of the initial model's label-word logits (argmax of f0) on val and test."""
    data = read_arrays(path)
    return pd.DataFrame(
        [
            {
                "formula": "none",
                "solver": "initial_model",
                "split": s,
                "accuracy": kernels.accuracy(
                    kernels.predictions_to_labels(data[f"f0_{s}"].reshape(-1), data[f"f0_{s}"].shape[1]),
                    data[f"y_{s}"],
                ),
                "mse": float("nan"),
                "reg": 0.0,
                "f0": True,
                "f0_scaling": 1.0,
                "n": int(len(data[f"y_{s}"])),
            }
            for s in SPLITS[1:]
        ]
    )
