"""Probe for issue 5's gradient skills graph: how well does a gradient graph at the initial model
(or a trained run's model) agree with the brute-force graph of a finished LEGO run?

A[i, j] = ⟨T(mean gradient of skill i's training loss), mean gradient of skill j's validation
loss⟩ / L_j (relative), T = identity or sign; Spearman correlation with the brute-force
adjacency over all entries and over off-diagonal ones, and the wall time.

    python bench/gradient_graph_probe.py --run bench/out/default/seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from skillmix.encoding import collate, per_example_loss
from skillmix.graph import read_graph
from skillmix.modeling import load_model, load_saved
from skillmix.runs import load_sets

REPO = Path(__file__).resolve().parents[1]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def mean_gradient(model, data, pad, n: int) -> tuple[torch.Tensor, float]:
    """The gradient of the mean loss over the first n examples (one batch), flat, and that loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    b = collate(data.input_ids[:n], data.labels[:n], pad)
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    loss = per_example_loss(logits, b["labels"]).mean()
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads]).double(), float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=REPO / "bench/out/default/seed0")
    parser.add_argument("--model", choices=["initial", "random"], default="initial")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-val", type=int, default=100)
    args = parser.parse_args()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    t0 = time.perf_counter()
    if args.model == "initial":
        model, tok = load_model(cfg["model"])
    else:
        model, tok = load_saved(args.run / "results/train/random/model")
    model.eval()
    manifest = json.loads((args.run / "results/slices/manifest.json").read_text())
    skills = [s["name"] for s in manifest["skills"]]
    slugs = [s["slug"] for s in manifest["skills"]]
    paths = {sp: [args.run / f"results/slices/{sp}/{s}.parquet" for s in slugs] for sp in ("train", "val")}
    train = load_sets(tok, skills, paths["train"], cfg["model"]["max_length"])
    val = load_sets(tok, skills, paths["val"], cfg["model"]["max_length"])
    pad = tok.pad_token_id
    gt = [mean_gradient(model, d, pad, args.n_train)[0] for d in train]
    gv, lv = zip(*[mean_gradient(model, d, pad, args.n_val) for d in val], strict=True)
    seconds = time.perf_counter() - t0
    brute, rows, cols = read_graph(args.run / "results/graph/brute_force")
    assert rows == skills and cols == skills
    off = ~np.eye(len(skills), dtype=bool)
    print(f"model {args.model}; {len(skills)} skills; gradient graph in {seconds:.1f} s (one process)")
    print("| T | Spearman (all entries) | Spearman (off-diagonal) |\n| --- | --- | --- |")
    for name, transform in (("identity", lambda x: x), ("sign", torch.sign)):
        a = np.array(
            [
                [float(transform(gt[i]) @ gv[j]) / lv[j] for j in range(len(skills))]
                for i in range(len(skills))
            ]
        )
        print(f"| {name} | {spearman(a.ravel(), brute.ravel()):+.3f} | {spearman(a[off], brute[off]):+.3f} |")


if __name__ == "__main__":
    main()
