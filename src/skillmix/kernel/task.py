"""A prompt-based classification task for the eNTK stage, and the kernel and solver jobs on it.

The task comes from the sliced data: the examples of `kernel.skills`, whose answers end in a
label word. With `label_split: last_word`, an answer such as "b = val 1" puts "b = val" at the
end of the prompt and makes "1" the label word; with `whole`, the answer is the label word.
Training uses `k_shot` examples per label drawn (seeded) from the training slices; the
validation and test slices are the sets X that the kernels and solvers are evaluated on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from skillmix.engine.features import select_parameters, untie_head
from skillmix.engine.modeling import load_model
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file
from skillmix.infra.stamps import STAMP_ARRAY, stamp_arrays
from skillmix.kernel import kernels

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SOLVERS = ("lstsq", "logistic", "asym")


def split_answer(prompt: str, answer: str, how: str) -> tuple[str, str]:
    """(prompt ending at the answer position, label word) of one example."""
    if how == "whole":
        return prompt, answer.strip()
    if how == "last_word":
        head, _, word = answer.strip().rpartition(" ")
        return (f"{prompt} {head}" if head else prompt), word
    raise SkillmixInputError(f"kernel.label_split must be whole or last_word, got {how!r}")


def build_task(
    frames: dict[str, pd.DataFrame],
    label_split: str,
    words: Sequence[str] | None,
    k_shot: int,
    seed: int,
    max_eval: int | None,
) -> tuple[pd.DataFrame, list[str]]:
    """The task table (split, id, skill, prompt, word, label) and the label words in label order.

    `frames` maps each split to the rows of the kernel skills. Label words are `words` when
    given (rows with another word are an error), else the sorted distinct words of the training
    rows. Training keeps `k_shot` rows per label (all if fewer, with a warning); val and test
    keep their first `max_eval` rows.
    """
    parts = []
    for split in SPLITS:
        frame = frames.get(split)
        if frame is None or frame.empty:
            raise SkillmixInputError(f"kernel task: the {split} split of the kernel skills has no rows")
        pairs = [
            split_answer(p, a, label_split) for p, a in zip(frame["prompt"], frame["answer"], strict=True)
        ]
        parts.append(
            pd.DataFrame(
                {
                    "split": split,
                    "id": frame["id"].astype(str).to_numpy(),
                    "skill": frame["skill"].astype(str).to_numpy(),
                    "prompt": [p for p, _ in pairs],
                    "word": [w for _, w in pairs],
                }
            )
        )
    table = pd.concat(parts, ignore_index=True)
    labels = list(words) if words else sorted(table.loc[table["split"] == "train", "word"].unique())
    if len(labels) < 2:
        raise SkillmixInputError(f"kernel task: need at least two label words, found {labels}")
    unknown = sorted(set(table["word"]) - set(labels))
    if unknown:
        raise SkillmixInputError(
            f"kernel task: answers end in words {unknown[:5]} that are not label words {labels}; "
            "set kernel.label_words or choose kernel.skills with a fixed label set"
        )
    table["label"] = table["word"].map({w: i for i, w in enumerate(labels)}).astype(int)
    train = table[table["split"] == "train"]
    rng = np.random.default_rng([seed, 13])
    keep = []
    for label in range(len(labels)):
        rows = train.index[train["label"] == label].to_numpy()
        if len(rows) < k_shot:
            log.warning(
                "kernel task: label %r has only %d training rows (k_shot %d)",
                labels[label],
                len(rows),
                k_shot,
            )
        keep.extend(sorted(rng.permutation(rows)[:k_shot].tolist()))
    evals = [
        table[table["split"] == s].head(max_eval) if max_eval else table[table["split"] == s]
        for s in SPLITS[1:]
    ]
    return pd.concat([table.loc[sorted(keep)], *evals], ignore_index=True), labels


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


def solve_kernels(
    data: Mapping[str, np.ndarray],
    formula: str,
    solvers: Sequence[str],
    reg: float,
    f0: bool,
    gamma: float,
    asym_mix: float,
) -> pd.DataFrame:
    """Accuracy and mean squared error of every solver on val and test from the arrays of one kernel
    file (`read_arrays`: K_train, y_train, f0_train and K_<split>, f0_<split>, y_<split> for val
    and/or test; the splits present are solved).

    Rows: formula, solver, split, accuracy, mse, reg, f0. Asymmetric kernels use their first
    matrix ⟨sign g(train), g(x)⟩ (the direction a SignGD step on a training example moves x),
    except `asym`, which uses both and runs only on binary asymmetric kernels (skipped, with a
    log line, for other formulas).
    """
    c = int(data["K_train"].shape[-1])  # outputs: the label words, or 1 when binary

    def k(split: str) -> np.ndarray:
        arr = data[f"K_{split}"]
        return arr[0] if formula == "asymmetric_signgd" else arr

    y_train = kernels.targets_matrix(data["y_train"], c)
    rows = []
    for solver in solvers:
        for split in [s for s in SPLITS[1:] if f"K_{s}" in data]:
            if solver == "lstsq":
                res = kernels.solve_lstsq(
                    k("train"),
                    y_train,
                    k(split),
                    reg=reg,
                    f0_train=data["f0_train"] if f0 else None,
                    f0_test=data[f"f0_{split}"] if f0 else None,
                )
            elif solver == "logistic":
                res = kernels.solve_logistic(k("train"), y_train, k(split), reg=reg)
            elif solver == "asym":
                if formula != "asymmetric_signgd" or c != 1:
                    log.info("asym solver skipped for %s (it needs binary asymmetric kernels)", formula)
                    continue
                res = kernels.solve_asym(data["K_train"], y_train, data[f"K_{split}"], gamma, asym_mix)
            else:
                raise SkillmixInputError(f"kernel.solvers: unknown {solver!r}; expected some of {SOLVERS}")
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
                    "f0": bool(f0 and solver == "lstsq"),
                    "n": int(len(truth)),
                }
            )
    return pd.DataFrame(rows)


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
                "n": int(len(data[f"y_{s}"])),
            }
            for s in SPLITS[1:]
        ]
    )


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
