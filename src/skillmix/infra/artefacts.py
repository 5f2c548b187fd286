"""Cheap checks that a learned artefact on disk is whole: safetensors files (saved models, adapters,
warm-up checkpoints, resume states) read their 8-byte header length and JSON header and compare
where the tensors end with the file's size, so a truncated file is named, with its folder, before
a job loads it or Snakemake reports "Nothing to be done". Dependency-free (DAG time).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from skillmix.infra.errors import SkillmixInputError

SAFETENSORS_SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit on a header
SKIPPED_FOLDERS = ("resume",)
"""Folders directly under results/ whose files are caches that their job checks itself."""


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a safetensors file (truncated, padded, no valid header), or None."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"{size} bytes, shorter than the 8-byte header length"
    with open(path, "rb") as handle:
        (n_header,) = struct.unpack("<Q", handle.read(8))
        if n_header > min(_MAX_HEADER, size - 8):
            return f"{size} bytes, but its header alone says {n_header} bytes"
        raw = handle.read(n_header)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return f"its header is not valid safetensors JSON ({type(exc).__name__}: {exc})"
    expected = 8 + n_header + max(ends, default=0)
    if expected != size:
        return f"{size} bytes, but its header says {expected}"
    return None


def check_safetensors(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
    """Require a whole safetensors file; raise naming it and the folder to delete (`folder`, by
    default the file's own) so that the job that writes it runs again."""
    path = Path(path)
    problem = safetensors_problem(path)
    if problem is not None:
        folder = Path(folder) if folder is not None else path.parent
        raise SkillmixInputError(
            f"{folder}: {path.name} is truncated or damaged ({problem}); it was cut short or edited "
            f"after it was written. Delete the folder {folder} and run snakemake again to rebuild it"
        )


def check_saved_model(folder: str | os.PathLike) -> None:
    """Require every safetensors file of a saved model folder (and of its `adapter/`) to be whole."""
    folder = Path(folder)
    for path in sorted([*folder.glob(f"*{SAFETENSORS_SUFFIX}"), *folder.glob(f"*/*{SAFETENSORS_SUFFIX}")]):
        check_safetensors(path, folder)


def _safetensors_under(root: Path) -> Iterable[Path]:
    """The safetensors files under `root`, leaving out hidden entries (a running or killed job's
    temporary folders) and the cache folders of :data:`SKIPPED_FOLDERS` at the top."""
    for here, folders, files in os.walk(root):
        top = Path(here) == root
        folders[:] = sorted(
            f for f in folders if not f.startswith(".") and not (top and f in SKIPPED_FOLDERS)
        )
        for name in sorted(files):
            if name.endswith(SAFETENSORS_SUFFIX) and not name.startswith("."):
                yield Path(here) / name


def check_learned_artefacts(results: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()) -> None:
    """Require every safetensors file under a results folder (saved models, adapters, warm-up
    checkpoints), and the `extra` files that are safetensors (a configured local model), to be whole.

    Meant for DAG time: a model folder damaged after its job finished would otherwise go unnoticed
    ("Nothing to be done") or fail a job after Snakemake deleted what it would replace. A file that
    vanishes meanwhile (a job replacing its folder) is skipped.
    """
    root = Path(results)
    paths = [*_safetensors_under(root), *(Path(p) for p in extra if str(p).endswith(SAFETENSORS_SUFFIX))]
    for path in paths:
        try:
            folder = path.parent.parent if path.parent.name == "adapter" else path.parent
            check_safetensors(path, folder)
        except FileNotFoundError:
            continue
