"""The kernel stage's arrays on the task (``skillmix.kernel.task``): label-word gradient features of
its rows (the kernel_features job), the kernels of every formula from them (the kernel job), and
the kernel solvers' accuracy on val and test (the kernel_solve job); ``.npz`` files between jobs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from skillmix.engine.modeling import load_model
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file
from skillmix.infra.stamps import STAMP_ARRAY, stamp_arrays
from skillmix.kernel import kernels
from skillmix.kernel.task import SPLITS

log = logging.getLogger(__name__)

SOLVERS = ("lstsq", "logistic", "asym")


def formula_transforms(formulas: Sequence[str]) -> list[str]:
    """The feature transforms the kernels of `formulas` need (sgd and/or sign), checked."""
    bad = [f for f in formulas if f not in kernels.FORMULAS]
    if bad:
        raise SkillmixInputError(f"kernel.formulas: unknown {bad}; expected some of {kernels.FORMULAS}")
    return [t for t in ("sgd", "sign") if any(t in kernels.FORMULA_TRANSFORMS[f] for f in formulas)]


def task_features(
    model_cfg: dict[str, Any],
    task: pd.DataFrame,
    words: Sequence[str],
    formulas: Sequence[str],
    subset: str,
    binary: bool,
    rows: tuple[int, int] | None,
    projection_dim: int | None,
    projection_seed: int,
) -> dict[str, np.ndarray]:
    """Label-word gradient features of the task rows [start, stop) (all rows when None).

    Arrays: `rows` (task row numbers), `f0` (initial logits [n, C]), and one feature array
    [n, C, d] per transform the formulas need: `sgd` (float64, or float32 projected) and
    `sign` (int8, or float32 projected). With `binary` (two label words) C = 1 (f_1 − f_0).
    """
    model_cfg = complete("model", model_cfg)
    if binary and len(words) != 2:
        raise SkillmixInputError(f"kernel.binary needs exactly two label words, got {list(words)}")
    transforms = formula_transforms(formulas)
    start, stop = rows if rows is not None else (0, len(task))
    model, tokenizer = load_model({**model_cfg, "lora": {"enabled": False}})
    model = model.double()
    lw = kernels.label_words(tokenizer, words)
    part = task.iloc[start:stop]
    ids = kernels.prompt_ids(tokenizer, part["prompt"].tolist(), lw, model_cfg["max_length"])
    feats, logits = kernels.lm_label_features(
        model, ids, lw, subset, transforms, projection_dim, projection_seed, binary
    )
    out = {"rows": np.arange(start, stop, dtype=np.int64), "f0": logits.numpy()}
    for t, x in feats.items():
        out[t] = x.to(torch.int8).numpy() if t == "sign" and projection_dim is None else x.numpy()
    log.info("task rows %d..%d: features %s", start, stop, {t: x.shape for t, x in out.items()})
    return out


def kernels_from_features(
    task: pd.DataFrame,
    words: Sequence[str],
    parts: Sequence[dict[str, np.ndarray]],
    formulas: Sequence[str],
    row_block: int,
    col_block: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Per formula, the arrays of one kernel file: K_<split> (train × split), f0_<split>, y_<split>.

    `parts` are `task_features` of consecutive row ranges that together cover the task, in
    order (shards of any sizes give the same kernels).
    """
    transforms = formula_transforms(formulas)
    rows = np.concatenate([p["rows"] for p in parts]) if parts else np.empty(0, dtype=np.int64)
    if not np.array_equal(rows, np.arange(len(task))):
        raise SkillmixInputError(
            f"kernel: the feature shards cover rows {rows[:3].tolist()}... ({len(rows)} rows), "
            f"expected 0..{len(task) - 1} in order; re-run the kernel_features jobs"
        )
    missing = [t for t in transforms if any(t not in p for p in parts)]
    if missing:
        raise SkillmixInputError(f"kernel: the feature shards lack the {missing} features the formulas need")
    feats = {t: torch.from_numpy(np.concatenate([p[t] for p in parts])) for t in transforms}
    f0 = np.concatenate([p["f0"] for p in parts])
    where = {s: np.flatnonzero(task["split"].to_numpy() == s) for s in SPLITS}
    y = {s: task["label"].to_numpy()[where[s]] for s in SPLITS}
    train = {t: x[where["train"]] for t, x in feats.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for formula in formulas:
        arrays: dict[str, np.ndarray] = {"words": np.array(list(words))}
        for split in SPLITS:
            other = {t: x[where[split]] for t, x in feats.items()}
            arrays[f"K_{split}"] = kernels.kernel_from_features(
                train, other, formula, row_block, col_block
            ).numpy()
            arrays[f"f0_{split}"] = f0[where[split]]
            arrays[f"y_{split}"] = y[split]
        out[formula] = arrays
    return out


def write_arrays(
    arrays: dict[str, np.ndarray], path: str | os.PathLike, stamp: dict[str, Any] | None = None
) -> None:
    """Save named arrays as an `.npz`, with the settings they were made with (`skillmix.infra.stamps`)
    when given; the file appears only when complete."""
    if stamp is not None:
        arrays = {**arrays, **stamp_arrays(stamp)}
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The named arrays of an `.npz` written by `write_arrays` (its stamp left out)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k != STAMP_ARRAY}


def _solve(
    solver: str, data: Mapping[str, np.ndarray], formula: str, split: str, settings: Mapping[str, Any]
) -> kernels.SolverResult | None:
    """One solver on one split (None when `asym` does not apply to the formula)."""
    c = int(data["K_train"].shape[-1])  # outputs: the label words, or 1 when binary
    y_train = kernels.targets_matrix(data["y_train"], c)
    reg, scaling = settings["reg"], settings["f0_scaling"]
    f0 = {"f0_train": data["f0_train"], "f0_test": data[f"f0_{split}"]} if settings["f0"] else {}

    def k(name: str) -> np.ndarray:
        arr = data[f"K_{name}"]
        return arr[0] if formula == "asymmetric_signgd" else arr

    if solver == "lstsq":
        return kernels.solve_lstsq(k("train"), y_train, k(split), reg=reg, f0_scaling=scaling, **f0)
    if solver == "logistic":
        return kernels.solve_logistic(k("train"), y_train, k(split), reg=reg)
    if solver == "asym":
        if formula != "asymmetric_signgd" or c != 1:
            log.info("asym solver skipped for %s (it needs binary asymmetric kernels)", formula)
            return None
        return kernels.solve_asym(
            data["K_train"],
            y_train,
            data[f"K_{split}"],
            settings["gamma"],
            settings["asym_mix"],
            reg=reg,
            f0_scaling=scaling,
            **f0,
        )
    raise SkillmixInputError(f"kernel.solvers: unknown {solver!r}; expected some of {SOLVERS}")


def solve_kernels(
    data: Mapping[str, np.ndarray],
    formula: str,
    solvers: Sequence[str],
    reg: float,
    f0: bool,
    gamma: float,
    asym_mix: float,
    f0_scaling: float = 1.0,
) -> pd.DataFrame:
    """Accuracy and mean squared error of every solver on val and test from the arrays of one kernel
    file (`read_arrays`: K_train, y_train, f0_train and K_<split>, f0_<split>, y_<split> for val
    and/or test; the splits present are solved).

    `reg` (kernel.reg) is the ridge of every solver; `f0` (kernel.f0) with `f0_scaling`
    (kernel.f0_scaling, s) puts the initial logits f0/s under lstsq and asym (logistic ignores
    f0, as in the original). Rows: formula, solver, split, accuracy, mse, reg, f0 (whether the
    solver used it), f0_scaling. Asymmetric kernels use their first matrix ⟨sign g(train), g(x)⟩
    (the direction a SignGD step on a training example moves x), except `asym`, which uses both
    and runs only on binary asymmetric kernels (skipped, with a log line, for other formulas).
    """
    c = int(data["K_train"].shape[-1])
    settings = {"reg": reg, "f0": f0, "f0_scaling": f0_scaling, "gamma": gamma, "asym_mix": asym_mix}
    rows = []
    for solver in solvers:
        for split in [s for s in SPLITS[1:] if f"K_{s}" in data]:
            res = _solve(solver, data, formula, split, settings)
            if res is None:
                continue
            truth = data[f"y_{split}"]
            target = kernels.targets_matrix(truth, c)
            mse = float(np.mean((res.predictions - target) ** 2)) if solver == "lstsq" else float("nan")
            rows.append(
                {
                    "formula": formula,
                    "solver": solver,
                    "split": split,
                    "accuracy": kernels.accuracy(res.labels, truth),
                    "mse": mse,
                    "reg": reg,
                    "f0": bool(res.settings["f0"]),  # logistic: False (it takes no f0)
                    "f0_scaling": f0_scaling,
                    "n": int(len(truth)),
                }
            )
    return pd.DataFrame(rows)
