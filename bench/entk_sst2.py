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

Fine-tuning on the same splits (the paper's other column) is not part of this script yet.

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

from skillmix.engine.modeling import load_pretrained
from skillmix.kernel.kernels import (
    kernel_from_features,
    label_words,
    lm_label_features,
    prompt_ids,
    solve_asym,
    solve_logistic,
    solve_lstsq,
    targets_matrix,
)

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


def k_shot(train: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Row numbers of k training sentences per label, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(train["label"].to_numpy() == c), size=k, replace=False) for c in (0, 1)]
    return np.sort(np.concatenate(rows))


def solve_all(k: dict[str, torch.Tensor], f0_train, f0_test, y_train, y_test) -> list[dict]:
    """Every formula × solver on one seed's kernels; accuracy on the test sentences."""
    y = targets_matrix(y_train, 1)
    rows = []

    def add(formula, solver, res):
        rows.append({"formula": formula, "solver": solver, "accuracy": float((res.labels == y_test).mean())})

    for formula in ("sgd", "signgd", "asymmetric_signgd"):
        kt, ks = k[f"{formula}_train"], k[f"{formula}_test"]
        first = (kt[0], ks[0]) if formula == "asymmetric_signgd" else (kt, ks)
        add(formula, "lstsq", solve_lstsq(first[0], y, first[1]))
        add(formula, "lstsq_f0", solve_lstsq(first[0], y, first[1], f0_train=f0_train, f0_test=f0_test))
        add(formula, "logistic", solve_logistic(first[0], y, first[1]))
        if formula == "asymmetric_signgd":
            add(formula, "asym", solve_asym(kt, y, ks))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, required=True, help="folder holding " + GGUF)
    parser.add_argument("--k", type=int, default=16, help="training sentences per label")
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--subset", default="layers.29.self_attn.o_proj", help="parameters differentiated")
    parser.add_argument("--test-limit", type=int, default=None, help="first test sentences only (a check)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "entk_sst2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)

    train, dev = read_sst2(shared_data() / "sst2")
    if args.test_limit:
        dev = dev.iloc[: args.test_limit]
    splits = {seed: k_shot(train, args.k, seed) for seed in args.seeds}
    union = np.unique(np.concatenate(list(splits.values())))
    prompts = [s + " It was" for s in [*train["sentence"].iloc[union], *dev["sentence"]]]

    t0 = time.perf_counter()
    model, tokenizer = load_pretrained(str(args.gguf), gguf_file=GGUF)
    model.eval()
    lw = label_words(tokenizer, WORDS)
    ids = prompt_ids(tokenizer, prompts, lw, args.max_length)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats, f0 = lm_label_features(model, ids, lw, args.subset, ("sgd", "sign"), binary=True)
    grad_s = time.perf_counter() - t0
    d = int(feats["sgd"].shape[-1])
    f0 = f0.numpy()[:, 0]  # f_great − f_terrible at θ0
    n_train = len(union)
    y_dev = dev["label"].to_numpy()
    zero_shot = float(((f0[n_train:] > 0) == y_dev).mean())
    median = float(((f0[n_train:] > np.median(f0[n_train:])) == y_dev).mean())

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
    table = pd.DataFrame(rows)
    summary = table.groupby(["formula", "solver"])["accuracy"].agg(["mean", "std"]).reset_index()
    info = {
        "k": args.k,
        "seeds": args.seeds,
        "subset": args.subset,
        "parameters": d,
        "train_sentences": int(n_train),
        "test_sentences": int(len(dev)),
        "zero_shot_accuracy": zero_shot,
        "zero_shot_share_great": float((f0[n_train:] > 0).mean()),
        "zero_shot_accuracy_median_threshold": median,
        "load_seconds": load_s,
        "gradient_seconds": grad_s,
        "threads": args.threads,
    }
    (args.out / "results.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    lines = [
        f"SST-2, SmolLM2-135M-Instruct (GGUF Q4_1), k = {args.k} per label, seeds {args.seeds}, "
        f"{len(dev)} test sentences; subset {args.subset!r} ({d:,} parameters); gradients of "
        f"{len(ids)} prompts in {grad_s:.0f} s.",
        "",
        f"Zero-shot accuracy {zero_shot:.3f} ({info['zero_shot_share_great']:.3f} predicted great; "
        f"{median:.3f} with the threshold at the median output).",
        "",
        "| kernel | solver | test accuracy (mean ± sd over seeds) |",
        "| --- | --- | --- |",
    ]
    for r in summary.itertuples():
        lines.append(f"| {r.formula} | {r.solver} | {r.mean:.3f} ± {r.std:.3f} |")
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
