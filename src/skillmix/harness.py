"""EleutherAI's lm-evaluation-harness on a saved model folder, offline: named tasks, built in or
defined by task YAML files in a local folder (e.g. `dataset_path: json` with local `data_files`).

lm-eval is an optional dependency (`pip install "skillmix[lmeval]"`). Built-in tasks load their data
sets from the Hugging Face hub, so offline they run only when the data set is in the local cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file

RESULT_COLUMNS = ["model", "task", "metric", "value", "stderr", "n"]


def require_lm_eval(key: str = "lm_eval.enabled") -> None:
    """Stop with SkillmixInputError naming `key` when lm-eval is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        raise SkillmixInputError(
            f"config {key}: the lm-eval rule needs lm-evaluation-harness; install it with "
            "pip install 'skillmix[lmeval]' (or pip install lm-eval)"
        )


def run_lm_eval(
    model_dir: str | os.PathLike,
    tasks: list[str],
    *,
    include_path: str | os.PathLike | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> dict[str, Any]:
    """lm-eval's results of `tasks` on the Hugging Face model folder `model_dir` (its `results`,
    `n-samples` and task `versions`, JSON-ready).

    `include_path`: a folder of task YAML files; `limit`: examples per task (a count, or a share
    below 1); `device`: cpu or cuda[:i]. Stops with SkillmixInputError naming the task when lm-eval
    does not know it.
    """
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise SkillmixInputError("config lm_eval.tasks: name at least one task")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (and the task files in {include_path})" if include_path else ""
        raise SkillmixInputError(f"config lm_eval.tasks: lm-eval knows no task {unknown}{where}")
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype={dtype}",
        tasks=list(tasks),
        task_manager=manager,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        device=device,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
    )
    return json.loads(
        json.dumps(
            {k: out.get(k) for k in ("results", "n-samples", "versions", "n-shot")},
            default=str,
        )
    )


def results_table(model: str, results: dict[str, Any]) -> pd.DataFrame:
    """One row per task and metric of `run_lm_eval`'s results: model, task, metric, value, stderr, n."""
    rows = []
    for task, metrics in (results.get("results") or {}).items():
        n = ((results.get("n-samples") or {}).get(task) or {}).get("effective")
        for name, value in metrics.items():
            if (
                "," not in name
                or name.split(",")[0].endswith("_stderr")
                or not isinstance(value, int | float)
            ):
                continue
            metric, _, flt = name.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{flt}")
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "metric": metric if flt == "none" else f"{metric},{flt}",
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, int | float) else float("nan"),
                    "n": n,
                }
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_results(results: dict[str, Any], path: str | os.PathLike) -> None:
    """The results as JSON, atomically."""
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1))
