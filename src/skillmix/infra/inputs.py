"""The local files a configured source or model reads, as rule inputs.

Listing them as inputs makes Snakemake re-run `slice` (or the stages that load the model) and
what follows when one is edited, replaced or removed, and makes a missing one fail when the
workflow is parsed (`snakemake -n`), naming the config key. Paths are taken as the loaders take
them: relative to the working directory. Nothing heavy is imported: this runs at parse time.
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path
from typing import Any

from skillmix.infra.errors import SkillmixInputError

MAX_FILES = 100_000
"""The most files a configured folder may hold (a data set saved to disk, a task folder): walking a
larger one at every parse of the workflow means a wrong path, such as ``/`` or a home folder."""

MAX_MODEL_FILES = 10_000
"""The most files a model folder may hold (weights shards, tokenizer and config files)."""

MODEL_MARKERS = ("config.json", "adapter_config.json")
"""Files one of which a model folder holds (transformers' and peft's save_pretrained); a GGUF
model's folder holds a .gguf file instead."""


def _kind(path: Path) -> str | None:
    """What a path is when it is neither a regular file nor a folder (after following links)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a pipe"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file (a socket?)")


def check_regular(path: Path, key: str, shown: str | None = None) -> None:
    """Refuse a path that is (or links to) a device, pipe or socket: read as data it never ends
    (``/dev/zero``) or blocks; named by its config `key`."""
    kind = _kind(path)
    if kind is not None:
        target = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise SkillmixInputError(
            f"config {key}: {shown or path}{target} is {kind}, not a regular file or folder; expected "
            "a data file or a folder of them"
        )


def _files_under(path: Path, key: str, limit: int = MAX_FILES) -> list[str]:
    """`path` itself, or every file below a folder (hidden files and folders left out), sorted.

    Refuses the filesystem root, a folder of more than `limit` files, and a path or file below it
    that is not a regular file (a device, a pipe), naming `key`."""
    check_regular(path, key)
    if not path.is_dir():
        return [str(path)]
    resolved = path.resolve()
    shown = str(path) if str(path) == str(resolved) else f"{path} ({resolved})"
    if resolved == Path(resolved.anchor):
        raise SkillmixInputError(
            f"config {key}: {shown} is the filesystem root; expected the folder of the data or model itself"
        )
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = sorted(f for f in files if not f.startswith("."))
        if len(found) + len(names) > limit:
            raise SkillmixInputError(
                f"config {key}: folder {shown} holds more than {limit:,} files; expected the "
                "folder of the data or model itself, not a folder above it"
            )
        for name in names:
            file = Path(root) / name
            check_regular(file, key)
            found.append(str(file))
    return found


def _existing(value: str, key: str, what: str = "file", folder: bool | None = None) -> Path:
    """The path of a config value that must exist: a regular file or a folder (`folder` True: a
    folder only, False: a file only), refused naming `key` otherwise."""
    path = Path(value).expanduser()
    if not path.exists():
        raise SkillmixInputError(f"config {key}: {what} {value} does not exist (relative to {Path.cwd()})")
    check_regular(path, key, value)
    if folder is not None and path.is_dir() != folder:
        wanted, got = ("a folder", "a file") if folder else ("a file", "a folder")
        raise SkillmixInputError(f"config {key}: {value} is {got}; expected {wanted}")
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
            key = "source.table.data_files"
            out[key] = [p for f in local for p in _files_under(_existing(f, key), key)]
            name = table.get("hf_name")
            if name and Path(name).expanduser().exists():
                out["source.table.hf_name"] = _files_under(Path(name).expanduser(), "source.table.hf_name")
        elif table.get("path"):
            key = "source.table.path"
            out[key] = _files_under(_existing(table["path"], key), key)
    elif kind == "natural_instructions":
        ni = source.get("natural_instructions") or {}
        key = "source.natural_instructions"
        if ni.get("tasks_dir") and ni.get("categories_csv"):
            tasks = _existing(ni["tasks_dir"], f"{key}.tasks_dir", "folder", folder=True)
            table = _existing(ni["categories_csv"], f"{key}.categories_csv", folder=False)
            out[f"{key}.categories_csv"] = [str(table)]
            listed = _listed_tasks(table, tasks, ni.get("file_column") or "task_file")
            for task in listed:
                check_regular(task, f"{key}.tasks_dir")
            out[f"{key}.tasks_dir"] = [str(p) for p in listed if p.is_file()]
    return out


def _listed_tasks(table: Path, tasks: Path, column: str) -> list[Path]:
    """The task files of the categories CSV that exist (none when it cannot be read as a CSV)."""
    try:
        with table.open(newline="", encoding="utf-8") as f:
            names = [(row.get(column) or "").strip() for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    files = [tasks / n for n in dict.fromkeys(names) if n]
    return [p for p in files if p.exists()]


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
        return {"model.gguf_file": [str(_existing(str(gguf), "model.gguf_file", folder=False))]}
    if path.exists():
        return {"model.name_or_path": _model_folder(path, name)}
    if looks_local(name):
        raise SkillmixInputError(
            f"config model.name_or_path: folder {name} does not exist (relative to {Path.cwd()})"
        )
    return {}


def _model_folder(path: Path, name: str) -> list[str]:
    """The files of a local model folder; refuses a folder that is not one (the filesystem root, a
    folder with no config.json, adapter_config.json or .gguf file, or with too many files), naming
    model.name_or_path, before every parse walks it."""
    key = "model.name_or_path"
    resolved = path.resolve()
    if path.is_dir() and resolved != Path(resolved.anchor):
        if not any((path / m).is_file() for m in MODEL_MARKERS) and not any(path.glob("*.gguf")):
            shown = name if name == str(resolved) else f"{name} ({resolved})"
            raise SkillmixInputError(
                f"config {key}: {shown} is not a model folder: it has no "
                f"{' or '.join(MODEL_MARKERS)} (or .gguf file); expected the folder a model was saved "
                "to (save_pretrained), or a hub name"
            )
    return _files_under(path, key, MAX_MODEL_FILES)


def _configured_paths(config: dict[str, Any]) -> dict[str, str]:
    """The config's other data paths by key (read by their stages, not listed as inputs here)."""
    given, select = config["graph"]["given"], config["select"]
    paths = {
        "graph.given.adjacency": given.get("adjacency"),
        "graph.given.skills": given.get("skills"),
        "regmix.proxy_runs": config["regmix"].get("proxy_runs"),
    }
    for index, entry in enumerate(select["target"]["files"] if select["enabled"] else ()):
        paths[f"select.target.files.{index}.path"] = entry["path"]
    return {key: value for key, value in paths.items() if value}


def check_data_paths(config: dict[str, Any]) -> None:
    """Refuse a configured data path that exists but is (or links to) a device, a pipe or a socket
    (read as data, ``/dev/zero`` never ends), naming its key; a missing one is its stage's business.
    The source's and the model's files are checked as :func:`source_files` and :func:`model_files`
    list them."""
    for key, value in _configured_paths(config).items():
        path = Path(value).expanduser()
        if path.exists():
            check_regular(path, key, value)


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
    key = "lm_eval.include_path"
    return _files_under(_existing(folder, key, "folder", folder=True), key)
