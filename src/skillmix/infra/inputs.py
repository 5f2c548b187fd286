"""The local files a configured source or model reads, as rule inputs.

Listing them as inputs makes Snakemake re-run `slice` (or the stages that load the model) and
what follows when one is edited, replaced or removed, and makes a missing one fail when the
workflow is parsed (`snakemake -n`), naming the config key. Paths are taken as the loaders take
them: relative to the working directory. Nothing heavy is imported: this runs at parse time.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from skillmix.infra.errors import SkillmixInputError


def _files_under(path: Path) -> list[str]:
    """`path` itself, or every file below a folder (hidden files and folders left out), sorted."""
    if not path.is_dir():
        return [str(path)]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [str(Path(root) / f) for f in sorted(files) if not f.startswith(".")]
    return found


def _existing(value: str, key: str, what: str = "file") -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise SkillmixInputError(f"config {key}: {what} {value} does not exist (relative to {Path.cwd()})")
    return path


def looks_local(name: str) -> bool:
    """Whether a model name is meant as a local path (not a hub name such as `org/model`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


def source_files(source: dict[str, Any]) -> dict[str, list[str]]:
    """The files the configured source reads, by config key; empty for synthetic sources.

    table: `path` (every file of a folder) or, for format hf, the local `data_files` and a local
    `hf_name`. natural_instructions: the categories CSV and the task files it lists that exist
    (the `slice` job names the missing ones). Stops with SkillmixInputError naming the key when a
    configured path does not exist.
    """
    kind = source.get("kind")
    out: dict[str, list[str]] = {}
    if kind == "table":
        table = source.get("table") or {}
        if table.get("format") == "hf":
            files = table.get("data_files")
            if isinstance(files, dict):
                files = [f for v in files.values() for f in ([v] if isinstance(v, str) else v)]
            elif isinstance(files, str):
                files = [files]
            local = [f for f in files or [] if "://" not in f and not any(c in f for c in "*?[")]
            out["source.table.data_files"] = [
                p for f in local for p in _files_under(_existing(f, "source.table.data_files"))
            ]
            name = table.get("hf_name")
            if name and Path(name).expanduser().exists():
                out["source.table.hf_name"] = _files_under(Path(name).expanduser())
        elif table.get("path"):
            out["source.table.path"] = _files_under(_existing(table["path"], "source.table.path"))
    elif kind == "natural_instructions":
        ni = source.get("natural_instructions") or {}
        key = "source.natural_instructions"
        if ni.get("tasks_dir") and ni.get("categories_csv"):
            tasks = _existing(ni["tasks_dir"], f"{key}.tasks_dir", "folder")
            table = _existing(ni["categories_csv"], f"{key}.categories_csv")
            out[f"{key}.categories_csv"] = [str(table)]
            out[f"{key}.tasks_dir"] = _listed_tasks(table, tasks, ni.get("file_column") or "task_file")
    return out


def _listed_tasks(table: Path, tasks: Path, column: str) -> list[str]:
    """The task files of the categories CSV that exist (none when it cannot be read as a CSV)."""
    try:
        with table.open(newline="", encoding="utf-8") as f:
            names = [(row.get(column) or "").strip() for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    files = [tasks / n for n in dict.fromkeys(names) if n]
    return [str(p) for p in files if p.is_file()]


def model_files(model: dict[str, Any]) -> dict[str, list[str]]:
    """The local files the configured model is loaded from, by config key; empty for the tiny model
    and for hub names (loaded from the local cache).

    pretrained: every file of the `name_or_path` folder; gguf: the `gguf_file` in it. Stops with
    SkillmixInputError naming the key when a local-looking path or the GGUF file does not exist.
    """
    kind = model.get("kind")
    name = model.get("name_or_path")
    if kind not in ("pretrained", "gguf") or not name:
        return {}
    path = Path(name).expanduser()
    if kind == "gguf" and model.get("gguf_file"):
        gguf = Path(model["gguf_file"]).expanduser()
        if not gguf.is_absolute():
            if not path.exists() and not looks_local(name):
                return {}  # a GGUF file of a hub repository in the cache
            gguf = path / gguf
        return {"model.gguf_file": [str(_existing(str(gguf), "model.gguf_file"))]}
    if path.exists():
        return {"model.name_or_path": _files_under(path)}
    if looks_local(name):
        raise SkillmixInputError(
            f"config model.name_or_path: folder {name} does not exist (relative to {Path.cwd()})"
        )
    return {}


def based_on(model: dict[str, Any], base: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """The model config of a stage that starts from a trained model: `model` with the saved folder
    `base[0]` (a rule input, so under a module's prefix) as a pretrained model; `model` itself when
    `base` is empty."""
    if not base:
        return dict(model)
    return {**model, "kind": "pretrained", "name_or_path": str(base[0]), "gguf_file": None}


def task_files(folder: str) -> list[str]:
    """Every file below an lm-eval task folder (`lm_eval.include_path`); stops naming the key when it
    does not exist."""
    return _files_under(_existing(folder, "lm_eval.include_path", "folder"))
