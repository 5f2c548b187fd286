"""Figures a person can look at: per-skill accuracy and loss over training steps."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_skill_curves(curve: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Two panels, accuracy and loss against step, one line per skill plus their mean.

    `curve` has columns step, skill, loss, accuracy (NaN accuracy leaves that panel empty).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, metric in zip(axes, ["accuracy", "loss"], strict=True):
        for skill, rows in curve.groupby("skill", sort=False):
            ax.plot(
                rows["step"],
                rows[metric],
                marker="o",
                markersize=3,
                linewidth=1.2,
                label=str(skill),
            )
        mean = curve.groupby("step")[metric].mean()
        ax.plot(mean.index, mean.values, color="black", linewidth=2.2, linestyle="--", label="mean")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mixture(mixture: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Stacked areas of the training mixture over rounds (columns round, step, skill, weight)."""
    table = mixture.pivot_table(index="step", columns="skill", values="weight", sort=False)
    table = table[list(dict.fromkeys(mixture["skill"]))]
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    steps = list(table.index)
    if len(steps) == 1:
        steps = [steps[0], steps[0] + 1]
        table = pd.concat([table, table])
    ax.stackplot(steps, table.T.values, labels=[str(c) for c in table.columns], step="post", alpha=0.85)
    ax.set_xlabel("training step (start of round)")
    ax.set_ylabel("share of the round's examples")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(summary: pd.DataFrame, path: str | os.PathLike) -> None:
    """Mean validation accuracy and loss over steps, one line per run, test scores as markers."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    val, test = summary[summary["split"] == "val"], summary[summary["split"] == "test"]
    for ax, metric in zip(axes, ["accuracy", "loss"], strict=True):
        for i, (run, rows) in enumerate(val.groupby("run", sort=False)):
            color = f"C{i}"
            ax.plot(rows["step"], rows[metric], marker="o", markersize=3, color=color, label=f"{run} (val)")
            t = test[test["run"] == run]
            ax.scatter(t["step"], t[metric], marker="*", s=120, color=color, zorder=3)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"mean {metric} over skills")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("strategies compared (lines: validation; stars: test at the end)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_weights(weights: pd.DataFrame, path: str | os.PathLike) -> None:
    """Side by side, per skill, every run's final mixture and its share of the training examples
    (columns run, skill, final, average)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True, sharey=True)
    for ax, column, title in zip(
        axes, ["final", "average"], ["final mixture", "share of training examples"], strict=True
    ):
        table = weights.pivot_table(index="skill", columns="run", values=column, sort=False)
        _grouped_bars(ax, table[list(dict.fromkeys(weights["run"]))], rotate=len(table) > 4)
        ax.set_title(title)
        ax.set_ylabel("weight")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped_bars(ax, table: pd.DataFrame, rotate: bool) -> None:
    """One group of bars per row of `table`, one bar (and legend entry) per column."""
    table.plot.bar(ax=ax, width=0.8, rot=45 if rotate else 0, legend=False)
    if rotate:
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_xlabel("")


def plot_composition(composition: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Bars per skill: its share of the candidate pool and of each selection.

    `composition` has columns skill, pool_share and one `<selection>_share` column per selection.
    """
    shares = [c for c in composition.columns if c.endswith("_share")]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(composition) + 3), 4), constrained_layout=True)
    table = composition.set_index("skill")[shares].rename(columns=lambda c: c.removesuffix("_share"))
    _grouped_bars(ax, table, rotate=True)
    ax.set_ylabel("share of examples")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(
    scores: pd.DataFrame, path: str | os.PathLike, title: str, threshold: float | None = None
) -> None:
    """Histogram of finite influence scores per skill (columns skill, score), with the selection cut-off."""
    finite = scores[pd.Series(scores["score"]).map(lambda v: v == v and abs(v) != float("inf"))]
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    for skill, rows in finite.groupby("skill", sort=False):
        ax.hist(rows["score"], bins=40, alpha=0.55, label=str(skill))
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.5, label="selection cut-off")
    ax.set_xlabel("influence score (weighted mean cosine, max over skills)")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_target_comparison(summary: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Loss and accuracy on each target skill (and their mean) for every trained selection.

    `summary` has columns selection, skill, loss, accuracy.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    table_of = {
        m: summary.pivot_table(index="skill", columns="selection", values=m, sort=False)
        for m in ("accuracy", "loss")
    }
    for ax, metric in zip(axes, ["accuracy", "loss"], strict=True):
        table = table_of[metric]
        table.loc["mean"] = table.mean()
        _grouped_bars(ax, table, rotate=True)
        ax.set_ylabel(f"target {metric}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kernel_solutions(
    table: pd.DataFrame, path: str | os.PathLike, comparison: pd.DataFrame | None = None
) -> None:
    """Val and test accuracy of every (formula, solver) pair, with fine-tuning and the initial model.

    `table` has columns formula, solver, split, accuracy (solver "initial_model" is drawn as a
    line); `comparison` (optional) adds each formula's matching fine-tuning accuracy as a bar.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True, sharey=True)
    for ax, split in zip(axes, ["val", "test"], strict=True):
        rows = table[(table["split"] == split) & (table["solver"] != "initial_model")]
        pivot = rows.pivot_table(index="formula", columns="solver", values="accuracy", sort=False)
        if comparison is not None:
            ft = comparison[comparison["split"] == split].set_index("formula")["finetune_accuracy"]
            pivot["fine-tuning"] = ft.reindex(pivot.index)
        _grouped_bars(ax, pivot, rotate=False)
        base = table[(table["split"] == split) & (table["solver"] == "initial_model")]["accuracy"]
        if len(base):
            ax.axhline(float(base.iloc[0]), color="black", linestyle="--", label="initial model")
        ax.set_ylim(0, 1)
        ax.set_title(f"{split} accuracy")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
