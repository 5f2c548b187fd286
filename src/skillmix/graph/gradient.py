"""The gradient skills graph (docs/methods/entk.md#gradient-graph): a skills graph from gradients,
with no training runs.

One SGD-like step on a batch of skill i moves the validation loss of skill j by about
−η·⟨∇L_j, T(ḡ_i)⟩, where ḡ_i is the mean gradient of skill i's training loss (the step of a
real batch, "feature of the mean") and T the optimizer's transform (sgd: the gradient as it is, sign for
Adam's early steps). At each checkpoint θ_k (by default only the initial model, which the
brute-force and linear graph runs start from):

    Â[i, j] = Σ_k w_k · ⟨T(ḡ_i(θ_k)), ∇L_j(θ_k)⟩  [ / L_j(θ_k) with normalise: relative ]

with equal weights w_k = η/K, η the step size (by default the graph runs' learning rate), so that
an entry is the first-order change of L_j (relative) from one step on skill i, the scale of the
learned graphs' entries. The gradients come from the shared feature engine
(`skillmix.engine.gradient_units`: mean-loss units; `skillmix.engine.feature_transforms`: transform, blocked
Gram); the matrix then goes through the same post-processing (clip, threshold, diagonal) as the
learned graphs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skillmix.data.slicing import read_manifest
from skillmix.engine.encoding import EncodedSet
from skillmix.engine.feature_transforms import FeatureMap, Transform, gram
from skillmix.engine.gradient_units import mean_loss_gradient
from skillmix.engine.modeling import Runtime, load_model, load_saved, select_runtime
from skillmix.engine.training_run import load_sets
from skillmix.graph.options import GraphOptions, postprocess
from skillmix.graph.writing import write_graph
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

GRAPH_TRANSFORMS = ("sgd", "sign")
EMULATIONS = ("linear", "brute_force")


@dataclass
class CheckpointGraph:
    """One checkpoint's term: the raw inner products [k, k] and the validation losses L_j."""

    name: str
    products: np.ndarray
    val_losses: np.ndarray
    seconds: float


def checkpoint_graph(
    name: str,
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    train_sets: Sequence[EncodedSet],
    val_sets: Sequence[EncodedSet],
    transform: str = "sign",
    subset: str = "all",
    train_examples: int | None = 512,
    val_examples: int | None = None,
    batch_size: int = 32,
    emulate: str = "linear",
) -> CheckpointGraph:
    """First-order loss changes for every pair of skills at one model, and the validation losses.

    ḡ_i is the gradient of the token-mean loss over the first `train_examples` training examples
    of skill i (a training batch's loss); ∇L_j that of the example-mean loss over the first
    `val_examples` validation examples of skill j (the evaluation's loss). `emulate` "linear":
    products[i, j] = ⟨T(ḡ_i), ∇L_j⟩ (a step on skill i); "brute_force": what the brute-force
    graph measures, a step on the equal mix of i and j against a step on j alone,
    ⟨T((ḡ_i + ḡ_j)/2) − T(ḡ_j), ∇L_j⟩ off the diagonal and ⟨T(ḡ_j), ∇L_j⟩ on it. float64.
    """
    if emulate not in EMULATIONS:
        raise SkillmixInputError(f"graph.gradient.emulate must be one of {EMULATIONS}, got {emulate!r}")
    if transform not in GRAPH_TRANSFORMS:
        raise SkillmixInputError(
            f"graph.gradient.transform must be one of {GRAPH_TRANSFORMS}, got {transform!r}"
        )
    if len(train_sets) != len(val_sets) or not train_sets:
        raise SkillmixInputError("gradient graph: need one training and one validation set per skill")
    start = time.perf_counter()
    model.to(runtime.device)

    def mean_gradients(sets: Sequence[EncodedSet], reduction: str, limit: int | None):
        """Flat mean-loss gradients [k, D] (float64, CPU) and the mean losses of `sets`."""
        flat, out, losses = None, [], []
        for data in sets:
            layout, grads, loss = mean_loss_gradient(
                model, runtime, pad_id, data, subset, reduction, limit, batch_size
            )
            flat = flat or FeatureMap(layout, [Transform("sgd")], dtype=torch.float64)
            out.append(flat(grads)[0].cpu())
            losses.append(loss)
        return torch.cat(out), losses

    rows, _ = mean_gradients(train_sets, "tokens", train_examples)
    cols, losses = mean_gradients(val_sets, "examples", val_examples)
    products = _products(rows, cols, Transform(transform), emulate)
    seconds = time.perf_counter() - start
    log.info("checkpoint %s: %d skills, %d parameters, %.1f s", name, rows.shape[0], rows.shape[1], seconds)
    return CheckpointGraph(name, products, np.asarray(losses, dtype=np.float64), seconds)


def _products(train: torch.Tensor, val: torch.Tensor, t: Transform, emulate: str) -> np.ndarray:
    """The [k, k] inner products of `checkpoint_graph` from mean gradients train [k, D], val [k, D]."""
    alone = gram(t(train), val).numpy()
    if emulate == "linear":
        return alone
    out = np.empty_like(alone)
    for j in range(train.shape[0]):
        mixed = gram(t((train + train[j]) / 2), val[j : j + 1]).numpy()[:, 0]
        out[:, j] = mixed - alone[j, j]
        out[j, j] = alone[j, j]
    return out


def combine(terms: Sequence[CheckpointGraph], options: GraphOptions, lr: float = 1.0) -> np.ndarray:
    """Â = lr × the mean over checkpoints of the products (each column divided by L_j when
    relative): the first-order change of L_j (relative) from one step of size lr on skill i.
    Then the learned graphs' post-processing (clip_negative, threshold, binary edges, diagonal)."""
    if not terms:
        raise SkillmixInputError("gradient graph: graph.gradient.checkpoints is empty")
    parts = []
    for t in terms:
        a = t.products
        if options.normalise == "relative":
            if (t.val_losses <= 0).any():
                raise SkillmixInputError(
                    f"gradient graph at {t.name}: a validation loss is not positive "
                    f"({t.val_losses.tolist()}); use graph.assemble.normalise: raw"
                )
            a = a / t.val_losses[None, :]
        parts.append(a)
    A = lr * np.mean(parts, axis=0)
    if not np.isfinite(A).all():
        raise SkillmixInputError("gradient graph: non-finite entries (check the checkpoints' losses)")
    return postprocess(A, options)


def losses_table(terms: Sequence[CheckpointGraph], skills: Sequence[str]) -> pd.DataFrame:
    """The validation loss of every skill at every checkpoint, as graph curves (unit = checkpoint, step 0)."""
    return pd.DataFrame(
        [
            {"unit": t.name, "step": 0, "skill": s, "loss": float(loss)}
            for t in terms
            for s, loss in zip(skills, t.val_losses, strict=True)
        ]
    )


def checkpoint_model(name: str, model_cfg: dict, model_dirs: Mapping[str, str | os.PathLike]):
    """The model and tokenizer of a checkpoint: `initial` (the configured model, as the graph runs
    start from it) or a training strategy's name (its saved model folder in `model_dirs`)."""
    if name == "initial":
        return load_model(model_cfg)
    if name not in model_dirs or not Path(model_dirs[name]).is_dir():
        where = model_dirs.get(name, "no folder given")
        raise SkillmixInputError(f"graph.gradient.checkpoints: {name!r}: no trained model ({where})")
    return load_saved(model_dirs[name])


def gradient_graph_from_files(
    model_cfg: dict,
    gradient_cfg: dict,
    assemble_cfg: dict,
    val_examples: int | None,
    runs_lr: float,
    manifest_path: str | os.PathLike,
    train_paths: Sequence[str | os.PathLike],
    val_paths: Sequence[str | os.PathLike],
    adjacency_path: str | os.PathLike,
    model_dirs: Mapping[str, str | os.PathLike],
) -> np.ndarray:
    """The gradient graph of the sliced skills at the configured checkpoints, written like the
    learned graphs (adjacency.npy, skills.json, raw.parquet of the losses, heatmap, graph.json).
    `model_dirs` names the saved model folder of every checkpoint but `initial`.

    The step size is `gradient_cfg["lr"]`, or the graph runs' learning rate `runs_lr` when null.
    """
    gradient_cfg = complete("graph.gradient", gradient_cfg)
    model_cfg = complete("model", model_cfg)
    options = GraphOptions.from_config(assemble_cfg)
    manifest = read_manifest(manifest_path)
    skills = [s["name"] for s in manifest["skills"]]
    runtime = select_runtime(model_cfg["device"], model_cfg["precision"])
    max_length = model_cfg["max_length"]
    terms = []
    for name in gradient_cfg["checkpoints"]:
        model, tokenizer = checkpoint_model(name, model_cfg, model_dirs)
        train_sets = load_sets(tokenizer, skills, train_paths, max_length)
        val_sets = load_sets(tokenizer, skills, val_paths, max_length)
        terms.append(
            checkpoint_graph(
                name,
                model,
                runtime,
                tokenizer.pad_token_id,
                train_sets,
                val_sets,
                gradient_cfg["transform"],
                gradient_cfg["subset"],
                gradient_cfg["train_examples"],
                val_examples,
                gradient_cfg["batch_size"],
                gradient_cfg["emulate"],
            )
        )
    lr = float(gradient_cfg.get("lr") or runs_lr)
    A = combine(terms, options, lr)
    extra = {
        "gradient": dict(gradient_cfg),
        "val_examples": val_examples,
        "lr": lr,
        "seconds": {t.name: t.seconds for t in terms},
        "products": {t.name: t.products.tolist() for t in terms},
    }
    write_graph(
        Path(adjacency_path).parent,
        A,
        skills,
        skills,
        losses_table(terms, skills),
        "gradient",
        options.to_dict(),
        extra,
    )
    return A
