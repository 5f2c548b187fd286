"""Empirical NTK kernels of fine-tuning and the solvers that predict from them (Malladi et al.,
ICML 2023; docs/methods/entk.md#kernels and #solvers).

For a model whose outputs on an example x are C logits f(x) (for a language model: the
next-token logits of the label words at the answer position), g_c(x) = ∇_θ f_c(x) over a chosen
parameter subset. Kernels between a training set (rows i) and a set X (columns j):

* ``sgd``:               K[i, c, j, c'] = ⟨g_c(x_i), g_c'(x_j)⟩  (the eNTK)
* ``signgd``:            K[i, c, j, c'] = ⟨sign g_c(x_i), sign g_c'(x_j)⟩  (integer-valued)
* ``asymmetric_signgd``: K[0] = ⟨sign g(x_i), g(x_j)⟩ and K[1] = ⟨g(x_i), sign g(x_j)⟩, stacked [2, …]

Every kernel is a Gram matrix of per-(example, logit) feature rows of the gradient-feature engine
(`skillmix.engine.gradient_units` and `feature_maps`: transform, optional projection, blocked float64
Gram), so memory stays bounded and the result does not depend on the block sizes. The solvers
flatten [N, C, M, C] to (N·C) × (M·C) with row index i·C + c: kernel regression with a ridge
relative to the top eigenvalue, with or without the initial model's outputs f0, and logistic
regression on the kernel's rows.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from skillmix.engine.encoding import special_prefix
from skillmix.engine.feature_transforms import FeatureMap, Projection, Transform, gram
from skillmix.engine.gradient_units import logit_gradients
from skillmix.infra.errors import SkillmixInputError

log = logging.getLogger(__name__)

FORMULAS = ("sgd", "signgd", "asymmetric_signgd")

Kernel = torch.Tensor | np.ndarray
"""A kernel block [N, C, M, C] (or [2, N, 1, M, 1] for the asymmetric pair), torch or numpy."""


FORMULA_TRANSFORMS = {
    "sgd": ("sgd",),
    "signgd": ("sign",),
    "asymmetric_signgd": ("sgd", "sign"),
}
"""The feature transforms each formula's kernel is built from."""


def kernel_from_features(
    train: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    formula: str = "sgd",
    row_block: int = 256,
    col_block: int = 256,
) -> torch.Tensor:
    """The kernel of one formula from per-logit features [N, C, d] and [M, C, d] keyed by transform.

    `sgd` and `signgd` give [N, C, M, C]; `asymmetric_signgd` gives [2, N, C, M, C] with [0] =
    ⟨sign g(x_i), g(x_j)⟩ and [1] = ⟨g(x_i), sign g(x_j)⟩ (the "flipped" kernel).
    """
    if formula not in FORMULAS:
        raise SkillmixInputError(f"kernel formula must be one of {FORMULAS}, got {formula!r}")
    kw = {"row_block": row_block, "col_block": col_block}
    if formula == "sgd":
        return gram(train["sgd"], other["sgd"], **kw)
    if formula == "signgd":
        return gram(train["sign"], other["sign"], **kw)
    return torch.stack([gram(train["sign"], other["sgd"], **kw), gram(train["sgd"], other["sign"], **kw)])


def flatten_kernel(k: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N, C, M, C'] → (N·C) × (M·C') with row index i·C + c, as float64 numpy."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 4:
        raise SkillmixInputError(f"kernel must be [N, C, M, C], got shape {k.shape}")
    n, c, m, c2 = k.shape
    return k.reshape(n * c, m * c2)


def targets_matrix(labels: Sequence[int] | np.ndarray, n_logits: int) -> np.ndarray:
    """Regression targets of the flattened kernel: one-hot [N·C] for C > 1, ±1 [N] for C = 1 (labels 0/1)."""
    y = np.asarray(labels, dtype=np.int64)
    if n_logits == 1:
        if not np.isin(y, [0, 1]).all():
            raise SkillmixInputError("binary targets must be 0 or 1")
        return (2.0 * y - 1.0).astype(np.float64)
    if y.min(initial=0) < 0 or y.max(initial=0) >= n_logits:
        raise SkillmixInputError(f"labels must lie in 0..{n_logits - 1}")
    return np.eye(n_logits)[y].reshape(-1)


def predictions_to_labels(pred: np.ndarray, n_logits: int) -> np.ndarray:
    """Argmax labels from flattened predictions ([M·C], or [M] binary scores: > 0 is label 1)."""
    pred = np.asarray(pred, dtype=np.float64)
    if n_logits == 1:
        return (pred > 0).astype(np.int64)
    return pred.reshape(-1, n_logits).argmax(axis=1)


@dataclass
class SolverResult:
    """Predictions of a solver on X (flattened like the targets) and what was used."""

    predictions: np.ndarray
    labels: np.ndarray
    settings: dict


def ridge(k_train: np.ndarray, reg: float) -> np.ndarray:
    """K + λ·σ_max(K)·I: the ridge relative to the top singular value (docs/methods/entk.md#solvers)."""
    if reg < 0:
        raise SkillmixInputError(f"kernel regularisation must be >= 0, got {reg}")
    if reg == 0:
        return k_train
    top = float(np.linalg.norm(k_train, 2))
    return k_train + reg * top * np.eye(k_train.shape[0])


def solve_lstsq(
    k_train: Kernel,
    y_train: np.ndarray,
    k_test: Kernel,
    reg: float = 0.0,
    f0_train: np.ndarray | None = None,
    f0_test: np.ndarray | None = None,
    f0_scaling: float = 1.0,
) -> SolverResult:
    """Kernel regression: α = lstsq(K_λ, Y − f0(X)/s), ŷ = K*ᵀα + f0(X*)/s (f0 only if given).

    k_train [N, C, N, C], k_test [N, C, M, C]; y_train flattened like `targets_matrix`; f0
    flattened the same way (the initial model's logits). With f0 and reg = 0 this is the
    infinite-time limit of gradient flow on ½·MSE of the linearised model.
    """
    kt = flatten_kernel(k_train)
    ks = flatten_kernel(k_test)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    if kt.shape[0] != kt.shape[1] or kt.shape[0] != y.shape[0] or ks.shape[0] != kt.shape[0]:
        raise SkillmixInputError(
            f"lstsq: shapes do not fit: train kernel {kt.shape}, targets {y.shape}, test kernel {ks.shape}"
        )
    use_f0 = f0_train is not None and f0_test is not None
    if (f0_train is None) != (f0_test is None):
        raise SkillmixInputError("lstsq: give both f0_train and f0_test, or neither")
    if use_f0 and f0_scaling <= 0:
        raise SkillmixInputError(f"kernel.f0_scaling must be positive, got {f0_scaling}")
    base_train = np.asarray(f0_train, dtype=np.float64).reshape(-1) / f0_scaling if use_f0 else 0.0
    base_test = np.asarray(f0_test, dtype=np.float64).reshape(-1) / f0_scaling if use_f0 else 0.0
    alpha = np.linalg.lstsq(ridge(kt, reg), y - base_train, rcond=None)[0]
    pred = ks.T @ alpha + base_test
    c = np.asarray(k_train).shape[1]
    return SolverResult(
        pred,
        predictions_to_labels(pred, c),
        {"solver": "lstsq", "reg": reg, "f0": use_f0, "f0_scaling": f0_scaling},
    )


def binary_collapse(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Two-logit outputs or Jacobians [N, 2, …] → the one output f = f_1 − f_0, [N, 1, …].

    Needed for the asymmetric SignGD kernel (a sign does not split over logits) and its solver.
    """
    if x.shape[1] != 2:
        raise SkillmixInputError(f"binary collapse needs exactly two labels, got {x.shape[1]}")
    return x[:, 1:2] - x[:, 0:1]


def solve_asym(
    k_train: Kernel,
    y_train: np.ndarray,
    k_test: Kernel,
    gamma: float = 1.0,
    mix: float = 0.5,
    reg: float = 0.0,
    f0_train: np.ndarray | None = None,
    f0_test: np.ndarray | None = None,
    f0_scaling: float = 1.0,
) -> SolverResult:
    """AsK-LS (He et al. 2022) on an asymmetric kernel pair, binary and without bias.

    k_train [2, N, 1, N, 1] and k_test [2, N, 1, M, 1] hold K[0] = ⟨sign g(train), g(x)⟩ and its
    flip K[1]; y_train ±1 [N]. With K_λ = K[0] + λ·σ_max(K[0])·I (`ridge`, λ = `reg`), the
    targets r = y − f0(X)/s (r = y without f0; s = `f0_scaling`) and H_ij = r_i·K_λ,ij·r_j, solve
    [[I/γ, H], [Hᵀ, I/γ]]·[α; β] = 1; then ω(x) = Σ_i α_i r_i K[0](x_i, x),
    ν(x) = Σ_i β_i r_i K[1](x_i, x) and the score is mix·ω + (1 − mix)·ν (+ f0(x)/s with f0),
    as the original's AsymmetricLstsqKernelSolver does with its ridge and `--adjust_for_init`.
    """
    kt, ks = np.asarray(k_train, dtype=np.float64), np.asarray(k_test, dtype=np.float64)
    if kt.ndim != 5 or kt.shape[0] != 2 or kt.shape[2] != 1 or ks.ndim != 5 or ks.shape[0] != 2:
        raise SkillmixInputError(
            f"asym solver: needs binary asymmetric kernels [2, N, 1, M, 1], got {kt.shape} and {ks.shape}"
        )
    if gamma <= 0:
        raise SkillmixInputError(f"asym solver: gamma must be positive, got {gamma}")
    if f0_scaling <= 0:
        raise SkillmixInputError(f"kernel.f0_scaling must be positive, got {f0_scaling}")
    if (f0_train is None) != (f0_test is None):
        raise SkillmixInputError("asym solver: give both f0_train and f0_test, or neither")
    use_f0 = f0_train is not None
    n, m = kt.shape[1], ks.shape[3]
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    if use_f0:
        y = y - np.asarray(f0_train, dtype=np.float64).reshape(-1) / f0_scaling
    # H from K[0] alone (docs/methods/entk.md#solvers; K[1] of train is its transpose)
    h = y[:, None] * ridge(kt[0].reshape(n, n), reg) * y[None, :]
    system = np.block([[np.eye(n) / gamma, h], [h.T, np.eye(n) / gamma]])
    coef = np.linalg.lstsq(system, np.ones(2 * n), rcond=None)[0]
    alpha, beta = coef[:n], coef[n:]
    omega = (alpha * y) @ ks[0].reshape(n, m)
    nu = (beta * y) @ ks[1].reshape(n, m)
    score = mix * omega + (1 - mix) * nu
    if use_f0:
        score = score + np.asarray(f0_test, dtype=np.float64).reshape(-1) / f0_scaling
    settings = {"gamma": gamma, "mix": mix, "reg": reg, "f0": use_f0, "f0_scaling": f0_scaling}
    return SolverResult(score, predictions_to_labels(score, 1), {"solver": "asym", **settings})


def solve_logistic(
    k_train: Kernel, y_train: np.ndarray, k_test: Kernel, reg: float = 0.0, seed: int = 0
) -> SolverResult:
    """Logistic regression (scikit-learn LogisticRegressionCV, L2, lbfgs) on the rows of K_λ.

    Each (example, logit) row is one sample with label (y + 1)/2 of the flattened ±1 / one-hot
    targets; a test column's score is log p1 − log p0. f0 is not used (as in the original).
    """
    from sklearn.linear_model import LogisticRegressionCV

    kt = ridge(flatten_kernel(k_train), reg)
    ks = flatten_kernel(k_test)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    labels = (y > 0).astype(np.int64)
    if len(np.unique(labels)) < 2:
        raise SkillmixInputError("logistic solver: the training targets hold a single class")
    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        raise SkillmixInputError("logistic solver: need at least 2 rows of each class")
    clf = LogisticRegressionCV(max_iter=10000, random_state=seed, cv=folds, scoring="accuracy")
    with warnings.catch_warnings():  # scikit-learn's notices of future default changes
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(kt, labels)
    logp = clf.predict_log_proba(ks.T)
    score = logp[:, 1] - logp[:, 0]
    c = np.asarray(k_train).shape[1]
    return SolverResult(
        score,
        predictions_to_labels(score, c),
        {"solver": "logistic", "reg": reg, "folds": folds, "seed": seed, "f0": False},
    )


def accuracy(labels: np.ndarray, truth: Sequence[int] | np.ndarray) -> float:
    """Share of equal labels."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape:
        raise SkillmixInputError(f"accuracy: {labels.shape} predictions for {truth.shape} labels")
    return float((labels == truth).mean()) if len(truth) else float("nan")


@dataclass
class LabelWords:
    """How label words are read off a causal LM: tokens appended to every prompt (the label
    words' shared leading tokens, e.g. a space byte), then one distinct token per label whose
    next-token logit is that label's output."""

    words: list[str]
    prefix: list[int]
    ids: list[int]


def label_words(tokenizer, words: Sequence[str]) -> LabelWords:
    """The answer position and label tokens of `words` (each encoded as " word", as answers are).

    The words' common leading tokens become the prompt suffix; the next token must then differ
    between all words (SkillmixInputError otherwise).
    """
    if len(words) < 2:
        raise SkillmixInputError(f"need at least two label words, got {list(words)}")
    encoded = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    k = 0
    while all(len(e) > k for e in encoded) and len({e[k] for e in encoded}) == 1:
        k += 1
    if any(len(e) <= k for e in encoded) or len({e[k] for e in encoded}) != len(words):
        raise SkillmixInputError(
            f"label words {list(words)} are not told apart by one token after their shared prefix "
            f"(token ids {encoded})"
        )
    return LabelWords(list(words), encoded[0][:k], [e[k] for e in encoded])


def prompt_ids(tokenizer, prompts: Sequence[str], lw: LabelWords, max_length: int) -> list[list[int]]:
    """Token ids of each prompt, ending at the answer position (too-long prompts lose their start)."""
    special = special_prefix(tokenizer)
    room = max_length - len(special) - len(lw.prefix)
    if room < 1:
        raise SkillmixInputError(f"max_length {max_length} leaves no room for a prompt")
    out = []
    for p in prompts:
        body = tokenizer(p, add_special_tokens=False)["input_ids"]
        out.append(special + body[max(0, len(body) - room) :] + lw.prefix)
    return out


def label_logits(model: torch.nn.Module, ids: list[int], label_ids: list[int]) -> torch.Tensor:
    """The label-word logits [C] of one prompt: next-token logits at its last position."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    logits = model(input_ids=x, use_cache=False).logits[0, -1]
    return logits[label_ids]


def lm_label_features(
    model: torch.nn.Module,
    ids: Sequence[list[int]],
    lw: LabelWords,
    subset: str = "all",
    transforms: Sequence[str] = ("sgd",),
    projection_dim: int | None = None,
    projection_seed: int = 0,
    binary: bool = False,
    batch: int = 1,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-(example, label word) gradient features of a causal LM and its label-word logits.

    Returns ({transform: [N, C, d]}, logits [N, C]), float64 on the CPU (float32 when
    projected). d is the number of parameters of `subset`, or `projection_dim` with the
    portable Rademacher projection of seed `projection_seed` (T is applied before projecting).
    With `binary` (two label words) the one output f_1 − f_0 is used: C = 1, collapsed before
    the transform, since a sign does not split over logits. `batch` prompts are transformed and
    projected together (the projection matrix is generated once per batch instead of once per
    prompt; the numbers are the same).
    """
    if batch < 1:
        raise SkillmixInputError(f"kernel features: batch must be >= 1, got {batch}")
    layout, items = logit_gradients(model, ids, lambda m, x: label_logits(m, x, lw.ids), subset)
    projection = None
    if projection_dim is not None:
        device = next(model.parameters()).device
        projection = Projection(sum(p.numel for p in layout), projection_dim, projection_seed, device)
    dtype = torch.float64 if projection is None else torch.float32
    fmap = FeatureMap(layout, [Transform(t) for t in transforms], projection, dtype=torch.float64)
    rows: dict[str, list[torch.Tensor]] = {t: [] for t in transforms}
    logits = []
    pending: list[dict[str, torch.Tensor]] = []

    def flush() -> None:
        stacked = {name: torch.cat([g[name] for g in pending]) for name in pending[0]}  # [B·C, *shape]
        n_out = pending[0][next(iter(pending[0]))].shape[0]
        for t, feat in zip(transforms, fmap(stacked), strict=True):
            rows[t].extend(feat.to(device="cpu", dtype=dtype).split(n_out))
        pending.clear()

    for _, grads, f in tqdm(items, total=len(ids), mininterval=5.0, desc="label-word gradients"):
        if binary:
            grads = {name: binary_collapse(g[None])[0] for name, g in grads.items()}
            f = binary_collapse(f[None])[0]
        pending.append(grads)
        if len(pending) == batch:
            flush()
        logits.append(f)
    if pending:
        flush()
    if not logits:
        raise SkillmixInputError("kernel: no prompts to compute features of")
    return {t: torch.stack(r) for t, r in rows.items()}, torch.stack(logits)
