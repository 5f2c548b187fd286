"""The eNTK view on SST-2 with SmolLM2-135M (issue 13, item 4; entk.md): zero-shot accuracy, then
kernel solvers on k-shot splits of five seeds, with the Jacobians computed once.

The task is the eNTK paper's sentiment prompt: "<sentence> It was" with the label words " terrible"
(label 0) and " great" (label 1), read as one output f = f_great − f_terrible (binary). For each
seed (13, 21, 42, 87, 100, the paper's), k training sentences per label are drawn from GLUE's
training file; the test set is GLUE's 872 validation sentences. The gradients of f at the
pretrained weights θ0 over a parameter subset are computed once, for the union of all seeds'
training sentences and the test sentences, and each seed's kernel is a sub-block of that Gram
matrix. Kernels: SGD (⟨g, g′⟩), SignGD (⟨sign g, sign g′⟩), asymmetric SignGD; solvers: kernel
regression (lstsq, with the initial outputs f0 or without), logistic regression, and AsK-LS for
the asymmetric kernel. Accuracy mean ± sd over the seeds, next to the zero-shot accuracy.

Fine-tuning on the same splits, the paper's other column, trains the same parameter block with
the rest frozen (`skillmix.engine.frozen_prefix.CachedPrefix`: the layers below the block are run once
per sentence): cross-entropy over the two label words, mini-batches of 8, 100 steps, a linear
decay, the gradient norm clipped at 1 (not for SignGD), and the learning rate chosen from a grid
by accuracy on a validation split of k more training sentences per label (the paper's protocol);
SGD for the SGD kernel, SignGD and Adam for the sign kernels.

    python bench/entk_sst2.py --gguf <folder of SmolLM2-135M-Instruct.Q4_1.gguf> --out bench/out/entk_sst2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skillmix.engine.gradient_units import select_parameters, untie_head
from skillmix.engine.modeling import load_pretrained
from skillmix.engine.frozen_prefix import CachedPrefix
from skillmix.infra.config import complete
from skillmix.kernel.kernels import (
    kernel_from_features,
    label_logits,
    label_words,
    lm_label_features,
    prompt_ids,
)
from skillmix.kernel.task_kernels import solve_kernels

REPO = Path(__file__).resolve().parents[1]
SEEDS = [13, 21, 42, 87, 100]
WORDS = ["terrible", "great"]  # label 0, label 1
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shared_data() -> Path:
    value = os.environ.get("SKILLMIX_SHARED_DATA")
    return Path(value) if value else REPO.parent / "shared" / "data"


def read_sst2(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GLUE SST-2's training rows (label, sentence) and validation rows (label, sentence)."""
    train = pd.read_csv(folder / "train.tsv", sep="\t", quoting=3)
    dev = pd.read_csv(folder / "dev.tsv", sep="\t", quoting=3).rename(columns={"content": "sentence"})
    for name, frame in (("train.tsv", train), ("dev.tsv", dev)):
        if not {"label", "sentence"} <= set(frame.columns) or not frame["label"].isin([0, 1]).all():
            raise SystemExit(f"{folder / name}: expected columns label (0/1) and sentence")
    return train, dev


GRID = {"sgd": [1e-3, 1e-2, 1e-1, 1.0, 10.0], "signgd": [1e-5, 1e-4, 1e-3], "adam": [1e-5, 1e-4, 1e-3, 1e-2]}
# all parameters move together: smaller steps (the original's full fine-tuning grids)
GRID_ALL = {"sgd": [1e-4, 1e-3, 1e-2, 1e-1], "signgd": [1e-7, 1e-6, 1e-5], "adam": [1e-6, 1e-5, 1e-4]}


def k_shot(train: pd.DataFrame, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of k training and k validation sentences per label, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(train["label"].to_numpy() == c), size=2 * k, replace=False) for c in (0, 1)
    ]
    return np.sort(np.concatenate([r[:k] for r in picked])), np.sort(np.concatenate([r[k:] for r in picked]))


def finetune(
    cache: CachedPrefix | FullModel,
    weights: list[torch.nn.Parameter],
    label_ids: list[int],
    train: tuple[np.ndarray, np.ndarray],
    evals: dict[str, tuple[np.ndarray, np.ndarray]],
    optimizer: str,
    lr: float,
    steps: int,
    batch: int,
    seed: int,
) -> tuple[dict[str, float], torch.Tensor]:
    """Train `weights` from their current values on the cached rows `train` (rows, labels): accuracy
    and mean loss on each of `evals`, and the trained values; `weights` are restored afterwards."""
    start = [w.detach().clone() for w in weights]
    opt = torch.optim.Adam(weights, lr=lr) if optimizer == "adam" else None
    rng = np.random.default_rng(seed)
    rows, labels = train
    order: list[int] = []
    for step in range(steps):
        scale = 1.0 - step / steps  # linear decay, no warm-up
        if len(order) < batch:
            order += rng.permutation(len(rows)).tolist()
        take, order = order[:batch], order[batch:]
        logits = torch.stack([cache.logits(int(rows[j]), label_ids) for j in take])
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels[take], device=logits.device))
        grads = torch.autograd.grad(loss, weights, allow_unused=True, materialize_grads=True)
        with torch.no_grad():
            if optimizer == "signgd":
                for w, g in zip(weights, grads, strict=True):
                    w -= lr * scale * torch.sign(g)
                continue
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            if norm > 1.0:
                grads = [g / norm for g in grads]
            if optimizer == "sgd":
                for w, g in zip(weights, grads, strict=True):
                    w -= lr * scale * g
            else:
                for w, g in zip(weights, grads, strict=True):
                    w.grad = g
                for group in opt.param_groups:
                    group["lr"] = lr * scale
                opt.step()
                for w in weights:
                    w.grad = None
    out = {k: v for name, (r, y) in evals.items() for k, v in evaluate(cache, label_ids, name, r, y).items()}
    trained = [w.detach().clone() for w in weights]
    with torch.no_grad():
        for w, s in zip(weights, start, strict=True):
            w.copy_(s)
    return out, trained


def evaluate(cache: CachedPrefix, label_ids: list[int], name: str, rows, y) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the cached rows under the model's current weights."""
    with torch.no_grad():
        logits = torch.stack([cache.logits(int(i), label_ids) for i in rows]).cpu()
    return {
        f"{name}_acc": float((logits.argmax(1).numpy() == y).mean()),
        f"{name}_loss": float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y))),
    }


class FullModel:
    """The whole model on its prompts, with CachedPrefix's `logits(i, rows)` (for fine-tuning all
    parameters, where nothing below a block stays frozen)."""

    def __init__(self, model: torch.nn.Module, prompts: list[list[int]]) -> None:
        self.model, self.prompts = model, prompts

    def logits(self, i: int, rows: list[int]) -> torch.Tensor:
        return label_logits(self.model, self.prompts[i], rows)


def solve_all(k: dict[str, np.ndarray], f0_train, f0_test, y_train, y_test) -> list[dict]:
    """Every formula × solver on one seed's kernels (the kernel stage's `solve_kernels`, its
    schema defaults for the ridge and AsK-LS); accuracy on the test sentences."""
    cfg = complete("kernel", None)
    rows = []
    for formula in ("sgd", "signgd", "asymmetric_signgd"):
        arrays = {
            "K_train": k[f"{formula}_train"],
            "K_test": k[f"{formula}_test"],
            "f0_train": f0_train,
            "f0_test": f0_test,
            "y_train": y_train,
            "y_test": y_test,
        }
        for f0, solvers in ((False, ["lstsq", "logistic", "asym"]), (True, ["lstsq"])):
            table = solve_kernels(arrays, formula, solvers, cfg["reg"], f0, cfg["gamma"], cfg["asym_mix"])
            for r in table.itertuples():
                name = f"{r.solver}_f0" if r.f0 else r.solver
                rows.append({"formula": formula, "solver": name, "accuracy": float(r.accuracy)})
    return rows


def finetune_all(model, tokenizer, lw, train, dev, both, args) -> list[dict]:
    """Per seed and optimizer, the grid's run with the best validation accuracy (then loss)."""
    for p in model.parameters():
        p.requires_grad_(False)
    valid = np.unique(np.concatenate([va for _, va in both.values()]))
    union = np.unique(np.concatenate([tr for tr, _ in both.values()]))
    rows_all = np.concatenate([union, valid])
    prompts = [s + " It was" for s in [*train["sentence"].iloc[rows_all], *dev["sentence"]]]
    ids = prompt_ids(tokenizer, prompts, lw, args.max_length)
    layer = int(args.subset.split(".")[1]) if args.subset.startswith("layers.") else None
    if layer is not None and not args.subset.count(",") and args.subset.endswith(("proj", "proj.weight")):
        # one weight of one layer: the layers below it run once per sentence
        weights = [model.model.get_submodule(args.subset.removesuffix(".weight")).weight]
        cache = CachedPrefix(model, ids, layer)
    else:  # any other subset (all parameters): the whole model every step
        for p in model.parameters():
            p.requires_grad_(True)
        untie_head(model, args.subset)
        weights = list(select_parameters(model.named_parameters(), args.subset).values())
        for p in model.parameters():
            p.requires_grad_(False)
        cache = FullModel(model, ids)
    for w in weights:
        w.requires_grad_(True)
    where = {int(r): i for i, r in enumerate(union)}
    where_valid = {int(r): len(union) + i for i, r in enumerate(valid)}
    test_rows = np.arange(len(rows_all), len(prompts))
    y_all = train["label"].to_numpy()
    out = []
    for seed, (tr, va) in both.items():
        split = (np.array([where[int(r)] for r in tr]), y_all[tr])
        valid_set = {"valid": (np.array([where_valid[int(r)] for r in va]), y_all[va])}
        test_set = (test_rows, dev["label"].to_numpy())
        for optimizer, grid in (GRID_ALL if args.subset == "all" else GRID).items():
            runs, trained = [], []
            for lr in grid:
                metrics, value = finetune(
                    cache, weights, lw.ids, split, valid_set, optimizer, lr, args.steps, 8, seed
                )
                runs.append({"lr": lr, **metrics})
                trained.append(value)
            chosen = max(range(len(runs)), key=lambda j: (runs[j]["valid_acc"], -runs[j]["valid_loss"]))
            start = [w.detach().clone() for w in weights]
            with torch.no_grad():  # only the chosen run is tested
                for w, v in zip(weights, trained[chosen], strict=True):
                    w.copy_(v)
            test = evaluate(cache, lw.ids, "test", *test_set)
            with torch.no_grad():
                for w, v in zip(weights, start, strict=True):
                    w.copy_(v)
            out.append({"seed": seed, "optimizer": optimizer, **runs[chosen], **test, "grid": runs})
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, required=True, help="folder holding " + GGUF)
    parser.add_argument("--k", type=int, default=16, help="training sentences per label")
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--subset", default="layers.29.self_attn.o_proj", help="parameters differentiated")
    parser.add_argument("--test-limit", type=int, default=None, help="first test sentences only (a check)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps")
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--projection-batch", type=int, default=1, help="prompts projected together")
    parser.add_argument(
        "--projection", type=int, default=None, help="project the gradients to this width (all parameters)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "entk_sst2")
    return parser.parse_args()


def kernel_rows(feats, f0, union, splits, train, y_dev) -> list[dict]:
    """Every seed's kernels (sub-blocks of the features of the union of the seeds' training
    sentences, then the test sentences) solved: one row per seed, formula and solver."""
    n_train = len(union)
    rows = []
    for seed, picked in splits.items():
        pos = np.searchsorted(union, picked)  # this seed's rows in the union
        tr = {t: x[pos] for t, x in feats.items()}
        test = {t: x[n_train:] for t, x in feats.items()}  # views: the test rows come last
        k = {}
        for formula in ("sgd", "signgd", "asymmetric_signgd"):
            k[f"{formula}_train"] = kernel_from_features(tr, tr, formula).numpy()
            k[f"{formula}_test"] = kernel_from_features(tr, test, formula).numpy()
        y_train = train["label"].to_numpy()[picked]
        for row in solve_all(k, f0[pos], f0[n_train:], y_train, y_dev):
            rows.append({"seed": seed, **row})
    return rows


def report(info: dict, rows: list[dict], ft_rows: list[dict], n_prompts: int, steps: int) -> str:
    """The Markdown report: zero-shot accuracy, the solvers' mean ± sd, fine-tuning."""
    table = pd.DataFrame(rows)
    summary = table.groupby(["formula", "solver"])["accuracy"].agg(["mean", "std"]).reset_index()
    lines = [
        f"SST-2, SmolLM2-135M-Instruct (GGUF Q4_1), k = {info['k']} per label, seeds {info['seeds']}, "
        f"{info['test_sentences']} test sentences; subset {info['subset']!r} ({info['parameters']:,} "
        f"parameters); gradients of {n_prompts} prompts in {info['gradient_seconds']:.0f} s.",
        "",
        f"Zero-shot accuracy {info['zero_shot_accuracy']:.3f} ({info['zero_shot_share_great']:.3f} "
        f"predicted great; {info['zero_shot_accuracy_median_threshold']:.3f} with the threshold at "
        "the median output).",
        "",
        "| kernel | solver | test accuracy (mean ± sd over seeds) |",
        "| --- | --- | --- |",
    ]
    for r in summary.itertuples():
        lines.append(f"| {r.formula} | {r.solver} | {r.mean:.3f} ± {r.std:.3f} |")
    if ft_rows:
        ft = pd.DataFrame(ft_rows)
        lines += [
            "",
            f"Fine-tuning the same block ({steps} steps, batch 8, lr by validation accuracy; "
            f"{info['finetune_seconds']:.0f} s for all runs):",
            "",
            "| optimizer | test accuracy | chosen lr per seed |",
            "| --- | --- | --- |",
        ]
        for opt, t in ft.groupby("optimizer", sort=False):
            acc = t["test_acc"].to_numpy()
            lrs = ", ".join(f"{v:g}" for v in t["lr"])
            lines.append(f"| {opt} | {acc.mean():.3f} ± {acc.std(ddof=1):.3f} | {lrs} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)

    train, dev = read_sst2(shared_data() / "sst2")
    if args.test_limit:
        dev = dev.iloc[: args.test_limit]
    both = {seed: k_shot(train, args.k, seed) for seed in args.seeds}
    splits = {seed: tr for seed, (tr, _) in both.items()}
    union = np.unique(np.concatenate(list(splits.values())))
    prompts = [s + " It was" for s in [*train["sentence"].iloc[union], *dev["sentence"]]]

    t0 = time.perf_counter()
    model, tokenizer = load_pretrained(str(args.gguf), gguf_file=GGUF)
    model.to(args.device).eval()
    lw = label_words(tokenizer, WORDS)
    ids = prompt_ids(tokenizer, prompts, lw, args.max_length)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats, f0 = lm_label_features(
        model, ids, lw, args.subset, ("sgd", "sign"), projection_dim=args.projection, binary=True,
        batch=args.projection_batch,
    )  # fmt: skip
    grad_s = time.perf_counter() - t0
    d = int(feats["sgd"].shape[-1])
    f0 = f0.numpy()[:, 0]  # f_great − f_terrible at θ0
    n_train = len(union)
    y_dev = dev["label"].to_numpy()
    zero_shot = float(((f0[n_train:] > 0) == y_dev).mean())
    median = float(((f0[n_train:] > np.median(f0[n_train:])) == y_dev).mean())

    rows = kernel_rows(feats, f0, union, splits, train, y_dev)
    ft_rows: list[dict] = []
    ft_s = 0.0
    if not args.no_finetune:
        t0 = time.perf_counter()
        ft_rows = finetune_all(model, tokenizer, lw, train, dev, both, args)
        ft_s = time.perf_counter() - t0
    info = {
        "k": args.k,
        "seeds": args.seeds,
        "subset": args.subset,
        "projection": args.projection,
        "device": args.device,
        "parameters": d,
        "train_sentences": int(n_train),
        "test_sentences": int(len(dev)),
        "zero_shot_accuracy": zero_shot,
        "zero_shot_share_great": float((f0[n_train:] > 0).mean()),
        "zero_shot_accuracy_median_threshold": median,
        "load_seconds": load_s,
        "gradient_seconds": grad_s,
        "finetune_seconds": ft_s,
        "threads": args.threads,
    }
    (args.out / "results.json").write_text(
        json.dumps({"info": info, "rows": rows, "finetune": ft_rows}, indent=1)
    )
    text = report(info, rows, ft_rows, len(ids), args.steps)
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
