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
