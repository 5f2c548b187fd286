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
