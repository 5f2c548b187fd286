"""The selected data: what it is made of and its files.

:func:`composition` tabulates the share of every skill in the pool and in each selection,
:func:`answer_composition` that of the answers (labels); :func:`write_jsonl` writes a selection
as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import pandas as pd

from skillmix.infra.jobs import atomic_file


def composition(pool: pd.DataFrame, selections: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per skill (pool order): pool count and share, then count and share in each selection."""
    skills = list(dict.fromkeys(pool["skill"]))
    out = pd.DataFrame({"skill": skills})
    counts = pool["skill"].value_counts()
    out["pool"] = [int(counts.get(s, 0)) for s in skills]
    out["pool_share"] = out["pool"] / max(1, len(pool))
    for name, sel in selections.items():
        c = sel["skill"].value_counts()
        out[name] = [int(c.get(s, 0)) for s in skills]
        out[f"{name}_share"] = out[name] / max(1, len(sel))
    return out


def answer_composition(
    pool: pd.DataFrame, selections: Mapping[str, pd.DataFrame], top: int = 10
) -> pd.DataFrame:
    """The answer (label) distribution of the pool and of each selection: the `top` answers most
    frequent in the pool or any selection, then one row "(other)"; counts and shares as composition."""
    frames = {"pool": pool, **selections}
    counts = {name: f["answer"].astype(str).value_counts() for name, f in frames.items()}
    totals = (
        pd.concat(list(counts.values())).groupby(level=0).sum().sort_values(ascending=False, kind="stable")
    )
    keep = list(totals.index[:top])
    out = pd.DataFrame({"answer": [*keep, "(other)"]})
    for name, f in frames.items():
        c = counts[name]
        n = [int(c.get(a, 0)) for a in keep]
        out[name] = [*n, int(len(f) - sum(n))]
        out[f"{name}_share"] = out[name] / max(1, len(f))
    return out


def write_jsonl(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """One JSON object per row, in row order; the file appears only when complete. A chat row's
    `messages` is written as its list of turns; rows without one leave the key out."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in frame.to_dict("records"):
            record = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            chat = record.pop("messages", "")
            if chat:
                record["messages"] = json.loads(chat)
            f.write(json.dumps(record) + "\n")
