"""RegMix's regression on its own published proxy runs (issue 28, item 4d; docs/methods/mixers.md#regmix).

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training", ICLR 2025
(arXiv 2407.01492). The data (../shared/data/regmix_proxy_runs, from sail-sg/regmix): 512 mixtures
of 17 Pile domains with the validation losses of the 1M-parameter proxies trained on them, and
held-out mixtures with the losses of 1M, 60M (the same 256 mixtures) and 1B models (64 mixtures).
The fit is on the 512 training rows, the weights as given (no renormalisation); every run here goes
through skillmix's own reader (`proxy_runs_from_frame`, what `regmix.proxy_runs` uses) and regressors.

Two protocols:
- **notebook** (replication of the authors' `regression.ipynb`): LightGBM per target with early
  stopping (3 rounds, l1 and l2) on the 1M test set it then reports on; Spearman ρ × 100 on the 1M
  test set per target; the simulated optimum (legacy `np.random.seed(42)`, 100,000 draws from
  Dirichlet(the notebook's Pile token distribution), mean of the 128 with the lowest predicted Pile-CC
  loss).
- **skillmix**: the default LightGBM (1000 rounds, no early stopping) and linear least squares, on the
  Pile-CC loss: Spearman ρ and Pearson r with the observed loss at 1M, 60M and 1B; and the fit job's
  own search (regmix.proxy_runs route: a table written in skillmix's column convention) with the
  objective Pile-CC.

    python bench/regmix_reproduction.py [--data DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skillmix.mixing.regmix_fit import regmix_fit_job
from skillmix.mixing.regmix_regression import fit_lightgbm, fit_regressor, pearson, spearman
from skillmix.mixing.regmix_runs import ProxyRuns, proxy_runs_from_frame
from skillmix.mixing.regmix_search import top_k_mean

REPO = Path(__file__).resolve().parents[1]
DOMAINS = [
    "arxiv", "freelaw", "nih_exporter", "pubmed_central", "wikipedia_en", "dm_mathematics", "github",
    "philpapers", "stackexchange", "enron_emails", "gutenberg_pg_19", "pile_cc", "ubuntu_irc", "europarl",
    "hackernews", "pubmed_abstracts", "uspto_backgrounds",
]  # fmt: skip
"""The 17 training domains, in the files' column order."""
TARGETS = [
    "arxiv", "freelaw", "pubmed_central", "wikipedia_en", "dm_mathematics", "github", "stackexchange",
    "gutenberg_pg_19", "pile_cc", "ubuntu_irc", "hackernews", "pubmed_abstracts", "uspto_backgrounds",
]  # fmt: skip
"""The 13 domains with a validation loss."""
NOTEBOOK_PRIOR = [
    0.11328527, 0.07960865, 0.00391349, 0.1853759, 0.05108136, 0.01596293, 0.10175077, 0.00370752,
    0.06652935, 0.00175077, 0.02708548, 0.23686921, 0.01184346, 0.00792997, 0.00803296, 0.03882595,
    0.04644696,
]  # fmt: skip
"""The notebook's token distribution of the 17 domains (its search prior)."""
NOTEBOOK_RHO = {
    "arxiv": 99.6, "freelaw": 99.71, "pubmed_central": 99.08, "wikipedia_en": 99.45, "dm_mathematics": 97.2,
    "github": 99.77, "stackexchange": 99.73, "gutenberg_pg_19": 99.18, "pile_cc": 98.92, "ubuntu_irc": 96.87,
    "hackernews": 98.51, "pubmed_abstracts": 99.19, "uspto_backgrounds": 99.12,
}  # fmt: skip
"""The notebook's printed Spearman ρ × 100 on the 1M test set, per target."""
NOTEBOOK_OPTIMUM = {"pile_cc": 0.890924344, "ubuntu_irc": 0.0614285142}
"""The notebook's printed simulated optimum (two of its weights)."""
PAPER_SPEARMAN = {
    "linear": {"1M": 90.08, "60M": 89.26, "1B": 88.01},
    "lightgbm": {"1M": 98.45, "60M": 98.64, "1B": 97.12},
}
PAPER_PEARSON_1B = {"linear": 72.57, "lightgbm": 94.36}
"""The paper's regression-accuracy table (Pile-CC, × 100), as docs/methods/mixers.md#regmix quotes it."""
THRESHOLDS = {
    "lightgbm": {"1M": 0.98, "60M": 0.98, "1B": 0.95},
    "linear": {"1M": 0.85, "60M": 0.85, "1B": 0.85},
}
"""The acceptance thresholds of the skillmix protocol (Spearman ρ on Pile-CC)."""
SCALES = {"1M": ("test_mixture_1m.csv", "test_pile_loss_1m.csv"),
          "60M": ("test_mixture_60m.csv", "test_pile_loss_60m.csv"),
          "1B": ("test_mixture_1B.csv", "test_pile_loss_1B.csv")}  # fmt: skip
TRAIN = ("train_mixture_1m.csv", "train_pile_loss_1m.csv")
WEIGHT, LOSS = "train_the_pile_{skill}", "metric/the_pile_{skill}_val_loss"
LIGHTGBM = {
    "num_iterations": 1000,
    "learning_rate": 0.01,
    "seed": 42,
    "early_stopping_rounds": None,
    "holdout": 0.2,
}


def shared_data() -> Path:
    """$SKILLMIX_SHARED_DATA, else ../shared/data beside the repository."""
    value = os.environ.get("SKILLMIX_SHARED_DATA")
    return Path(value) if value else REPO.parent / "shared" / "data"


def load_runs(folder: Path, files: tuple[str, str]) -> ProxyRuns:
    """One mixtures file and its losses file, joined on `index`, read as skillmix proxy runs."""
    mixtures, losses = (pd.read_csv(folder / f) for f in files)
    if not mixtures["index"].equals(losses["index"]):
        raise ValueError(f"{files}: the two files' `index` columns differ")
    frame = mixtures.merge(losses, on="index")
    return proxy_runs_from_frame(
        frame,
        DOMAINS,
        TARGETS,
        f"{folder}/{files[0]}",
        weight_column=WEIGHT,
        loss_column=LOSS,
        run_column="index",
    )


def notebook_protocol(train: ProxyRuns, test: ProxyRuns) -> dict:
    """Per-target ρ × 100 on the 1M test set (early stopping on it) and the simulated optimum."""
    rho, models = {}, {}
    for j, target in enumerate(TARGETS):
        model = fit_lightgbm(
            train.weights, train.losses[:, j], LIGHTGBM, (test.weights, test.losses[:, j]), 3
        )
        rho[target] = round(spearman(model.predict(test.weights), test.losses[:, j]) * 100, 2)
        models[target] = model
    np.random.seed(42)
    samples = np.random.dirichlet(NOTEBOOK_PRIOR, 100000)
    optimum, _ = top_k_mean(samples, models["pile_cc"].predict(samples), 128)
    return {"rho": rho, "optimum": {d: float(w) for d, w in zip(DOMAINS, optimum, strict=True)}}


def skillmix_protocol(train: ProxyRuns, tests: dict[str, ProxyRuns]) -> dict:
    """Spearman ρ and Pearson r on Pile-CC at every scale, default LightGBM and linear."""
    j = TARGETS.index("pile_cc")
    out = {}
    for regressor in ("lightgbm", "linear"):
        model = fit_regressor(train.weights, train.losses[:, j], regressor, LIGHTGBM)
        out[regressor] = {}
        for scale, test in tests.items():
            predicted = model.predict(test.weights)
            out[regressor][scale] = {
                "spearman": spearman(predicted, test.losses[:, j]),
                "pearson": pearson(predicted, test.losses[:, j]),
            }
    return out


def fit_job_search(folder: Path, out: Path) -> dict:
    """skillmix's `regmix_fit` job on the 512 runs given as a `regmix.proxy_runs` table (skillmix's
    columns weight:<domain>, loss:<domain>), objective Pile-CC, natural mixture = the notebook's
    token distribution, every other regmix setting at its default."""
    frame = pd.read_csv(folder / TRAIN[0]).merge(pd.read_csv(folder / TRAIN[1]), on="index")
    table = pd.DataFrame({"run": frame["index"]})
    for d in DOMAINS:
        table[f"weight:{d}"] = frame[WEIGHT.format(skill=d)]
    table["loss:pile_cc"] = frame[LOSS.format(skill="pile_cc")]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "proxy_runs.csv", index=False)
    sizes = {d: int(round(q * 1e9)) for d, q in zip(DOMAINS, NOTEBOOK_PRIOR, strict=True)}
    return regmix_fit_job(
        None,
        [],
        regmix_cfg={"proxy_runs": str(out / "proxy_runs.csv"), "objective": "pile_cc"},
        train_cfg={"target_skills": ["pile_cc"]},
        skills=sizes,
        outputs={"mixture": str(out / "mixture.json"), "fit": str(out / "fit.parquet")},
    )


def run(folder: Path, out: Path) -> dict:
    """Every protocol, timed."""
    t0 = time.perf_counter()
    train = load_runs(folder, TRAIN)
    tests = {scale: load_runs(folder, files) for scale, files in SCALES.items()}
    results = {"notebook": notebook_protocol(train, tests["1M"])}
    results["skillmix"] = skillmix_protocol(train, tests)
    job = fit_job_search(folder, out)
    results["fit_job"] = {k: job[k] for k in ("weights", "predicted_objective", "diagnostics", "runs")}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    return results


def report(r: dict) -> str:
    """The results beside the notebook's and the paper's figures, as Markdown."""
    import lightgbm

    machine = platform.processor() or platform.machine()
    lines = [
        f"lightgbm {lightgbm.__version__}, numpy {np.__version__}, {machine}, {r['seconds']} s",
        "",
        "Notebook protocol: ρ × 100 on the 1M test set",
        "",
        "| target | skillmix | notebook |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t} | {r['notebook']['rho'][t]:.2f} | {NOTEBOOK_RHO[t]:.2f} |" for t in TARGETS]
    opt = r["notebook"]["optimum"]
    lines += [
        "",
        "Simulated optimum (notebook protocol)",
        "",
        "| weight | skillmix | notebook |",
        "|---|---:|---:|",
    ]
    lines += [f"| {d} | {opt[d]:.10f} | {NOTEBOOK_OPTIMUM[d]:.10f} |" for d in NOTEBOOK_OPTIMUM]
    lines += [
        "",
        "skillmix protocol, Pile-CC: Spearman ρ × 100 (Pearson r × 100)",
        "",
        "| regressor | 1M | 60M | 1B | paper ρ 1M / 60M / 1B (Pearson 1B) |",
        "|---|---:|---:|---:|---|",
    ]
    for reg, scales in r["skillmix"].items():
        cells = [f"{100 * v['spearman']:.2f} ({100 * v['pearson']:.2f})" for v in scales.values()]
        paper = (
            " / ".join(f"{v:.2f}" for v in PAPER_SPEARMAN[reg].values()) + f" ({PAPER_PEARSON_1B[reg]:.2f})"
        )
        lines.append(f"| {reg} | {' | '.join(cells)} | {paper} |")
    job = r["fit_job"]
    top = sorted(job["weights"].items(), key=lambda kv: -kv[1])[:4]
    oof = job["diagnostics"]["out_of_fold"]["objective"]["spearman"]
    lines += [
        "",
        f"skillmix fit job (regmix.proxy_runs, objective pile_cc, {job['runs']} runs): 5-fold out-of-fold "
        f"ρ {oof:.4f}; predicted Pile-CC loss {job['predicted_objective']:.4f}; largest weights "
        + ", ".join(f"{d} {w:.4f}" for d, w in top),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="folder of the proxy runs (default: shared data)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the fit job's files and results.json"
    )
    args = parser.parse_args()
    folder = args.data or shared_data() / "regmix_proxy_runs"
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = run(folder, out)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(report(results))


if __name__ == "__main__":
    main()
