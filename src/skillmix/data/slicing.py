"""Per-skill train/val/test slices of a source, written as one Parquet file per (split, skill).

Layout of an output directory::

    {out_dir}/manifest.json            skills (name, slug, counts, sha256 per split), splits, columns,
                                       extras
    {out_dir}/{split}/{slug}.parquet   columns id, skill, prompt, answer, text, messages

Every reader checks a slice file against the checksum its manifest records, so a file damaged or
edited after slicing stops the job (or Snakemake's DAG) naming it, before anything is trained on it.

The examples are checked and split per skill in ``splitting``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skillmix.data.sources import COLUMNS, load_source
from skillmix.data.splitting import SPLITS, check_split_args, checked_slugs, split_by_skill
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import temporary_sibling
from skillmix.infra.slugs import SLUG_PATTERN, skill_slug

MANIFEST_NAME = "manifest.json"

_MAX_NAMED = 5  # offending values listed in an error message


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write the examples columns of ``frame`` as Parquet, all strings, no pandas metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: pa.array(frame[column].tolist(), type=pa.string()) for column in COLUMNS})
    pq.write_table(table, path)


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the slice set written under ``tmp`` into ``out_dir``, the manifest last.

    A missing ``out_dir`` is created by renaming ``tmp``. Into an existing one, the old manifest
    is removed first and Parquet files of skills that are no longer present are deleted, so a
    manifest on disk always describes a complete set.
    """
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for split in SPLITS:
        target = out_dir / split
        target.mkdir(exist_ok=True)
        new_names = {path.name for path in (tmp / split).iterdir()}
        for stale in target.glob("*.parquet"):
            if stale.name not in new_names:
                stale.unlink()
        for name in sorted(new_names):
            os.replace(tmp / split / name, target / name)
    os.replace(tmp / MANIFEST_NAME, out_dir / MANIFEST_NAME)


def skill_counts(splits: dict[str, pd.DataFrame], skills: list[str]) -> list[dict[str, Any]]:
    """The manifest's ``{"name", "counts": {split: rows}}`` entry of every skill, in `skills` order."""
    sizes = {split: frame["skill"].value_counts() for split, frame in splits.items()}
    return [
        {"name": skill, "counts": {split: int(sizes[split].get(skill, 0)) for split in splits}}
        for skill in skills
    ]


def write_slices(
    splits: dict[str, pd.DataFrame],
    skills: list[str],
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``{out_dir}/{split}/{slug}.parquet`` per split and skill, and the manifest.

    Everything is first written to a temporary sibling directory and then moved into place;
    on any error the temporary directory is removed, and one left by a killed earlier job is
    removed when the next one starts. Output is byte-stable. Returns the
    manifest: ``{"skills": [{"name", "slug", "counts", "sha256"}], "splits", "columns", **extra}``,
    ``sha256`` holding each split file's checksum.
    """
    out_dir = Path(out_dir)
    extra = dict(extra or {})
    reserved = sorted({"skills", "splits", "columns"} & set(extra))
    if reserved:
        raise SkillmixInputError(f"write_slices: extra manifest keys {reserved} are reserved")
    if sorted(splits) != sorted(SPLITS):
        raise SkillmixInputError(f"write_slices: expected splits {list(SPLITS)}, got {sorted(splits)}")
    slugs = checked_slugs(skills, str(out_dir))
    groups: dict[str, dict[str, pd.DataFrame]] = {}
    for split in SPLITS:
        frame = splits[split]
        if list(frame.columns) != COLUMNS:
            raise SkillmixInputError(
                f"write_slices: split {split!r} has columns {list(frame.columns)}, expected {COLUMNS}"
            )
        unlisted = sorted(set(frame["skill"]) - set(skills))
        if unlisted:
            raise SkillmixInputError(
                f"write_slices: split {split!r} has skill(s) {unlisted[:_MAX_NAMED]} not in the skill list"
            )
        groups[split] = dict(tuple(frame.groupby("skill", sort=False)))
    empty = pd.DataFrame({column: pd.Series([], dtype=str) for column in COLUMNS})
    manifest: dict[str, Any] = {
        "skills": [
            {"name": entry["name"], "slug": slug, "counts": entry["counts"]}
            for entry, slug in zip(skill_counts(splits, skills), slugs, strict=True)
        ],
        "splits": list(SPLITS),
        "columns": list(COLUMNS),
        **extra,
    }
    if out_dir.exists() and not out_dir.is_dir():
        raise SkillmixInputError(f"{out_dir}: exists and is not a directory")
    tmp = temporary_sibling(out_dir)  # removes the temporary folders of killed earlier jobs
    tmp.mkdir()
    try:
        for split in SPLITS:
            (tmp / split).mkdir()
            for skill, slug in zip(skills, slugs, strict=True):
                _write_parquet(groups[split].get(skill, empty), tmp / split / f"{slug}.parquet")
        for entry in manifest["skills"]:
            entry["sha256"] = {
                split: _sha256_of(tmp / split / f"{entry['slug']}.parquet") for split in SPLITS
            }
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (tmp / MANIFEST_NAME).write_text(text, encoding="utf-8")
        _install(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a slices manifest, given the manifest file or the directory that holds it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise SkillmixInputError(f"{path}: slices manifest not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SkillmixInputError(f"{path}: not a valid JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise SkillmixInputError(f"{path}: expected a JSON object")
    for key in ("skills", "splits", "columns"):
        if key not in manifest:
            raise SkillmixInputError(f"{path}: manifest lacks key {key!r}")
    for entry in manifest["skills"]:
        if not isinstance(entry, dict) or not {"name", "slug", "counts"} <= set(entry):
            raise SkillmixInputError(f"{path}: manifest skill entry {entry!r} lacks name/slug/counts")
        # slugs become file names under results/: only what slicing itself would write is accepted
        slug = entry["slug"]
        if not isinstance(slug, str) or not _SLUG_RE.fullmatch(slug) or slug != skill_slug(entry["name"]):
            raise SkillmixInputError(
                f"{path}: manifest skill {entry['name']!r} has slug {slug!r}, not the slug slicing gives "
                f"it; the manifest was edited or damaged: rebuild the slices (snakemake --forcerun slice)"
            )
    return manifest


_SLUG_RE = re.compile(SLUG_PATTERN)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4096)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The checksum of a file, computed once per (path, size, modification time) in a process."""
    return _sha256_of(Path(path))


def _recorded_checksums(manifest: dict[str, Any]) -> dict[tuple[str, str], str]:
    """{(split, slug file name): sha256} of a manifest (empty for one written before checksums)."""
    return {
        (split, f"{entry['slug']}.parquet"): digest
        for entry in manifest["skills"]
        for split, digest in (entry.get("sha256") or {}).items()
    }


@functools.lru_cache(maxsize=64)
def _manifest_checksums(path: str, size: int, mtime_ns: int) -> dict[tuple[str, str], str]:
    """The checksums a manifest records, read once per (path, size, modification time) in a process."""
    return _recorded_checksums(read_manifest(path))


def check_slice_file(path: str | os.PathLike, manifest_path: str | os.PathLike | None = None) -> None:
    """Require a slice file to match the checksum its manifest records.

    The manifest is `manifest_path`, else the one of the slice set the file sits in
    (``{set}/{split}/{slug}.parquet``); a file outside a slice set, or listed by a manifest written
    before checksums, is not checked. Raises naming the file and how to rebuild it.
    """
    path = Path(path)
    manifest_file = Path(manifest_path) if manifest_path else path.parent.parent / MANIFEST_NAME
    if not manifest_file.is_file():
        return
    stat = manifest_file.stat()
    recorded = _manifest_checksums(str(manifest_file.resolve()), stat.st_size, stat.st_mtime_ns)
    expected = recorded.get((path.parent.name, path.name))
    if expected is None:
        return
    if not path.is_file():
        raise SkillmixInputError(
            f"{path}: slice file missing (the manifest {manifest_file} lists it); rebuild the slices: "
            "snakemake --forcerun slice"
        )
    stat = path.stat()
    found = _cached_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if found != expected:
        raise SkillmixInputError(
            f"{path}: slice file damaged or changed after slicing ({stat.st_size} bytes, sha256 "
            f"{found[:12]}…; the manifest {manifest_file} records {expected[:12]}…). Rebuild the "
            "slices, and what was made from them, with: snakemake --forcerun slice"
        )


def check_slice_set(manifest_path: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a slice set against its manifest (the file, or the folder holding it);
    return the manifest."""
    manifest_path = Path(manifest_path)
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_NAME
    manifest = read_manifest(manifest_path)
    for split, name in _recorded_checksums(manifest):
        check_slice_file(manifest_path.parent / split / name, manifest_path)
    return manifest


def read_slices(
    paths: Sequence[str | os.PathLike], skills: Sequence[str] = (), what: str = "slices"
) -> dict[str, pd.DataFrame]:
    """Slice files keyed by the skill of their rows (files without rows are left out), each checked
    against its manifest's checksum (:func:`check_slice_file`).

    Raises naming `what` when one of `skills` has no file with rows among `paths`.
    """
    frames: dict[str, pd.DataFrame] = {}
    for path in paths:
        check_slice_file(path)
        frame = pd.read_parquet(path)
        if len(frame):
            frames[str(frame["skill"].iloc[0])] = frame
    missing = [skill for skill in skills if skill not in frames]
    if missing:
        raise SkillmixInputError(f"{what}: no slice file with rows for skills {missing}")
    return frames


def _split_config(split_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Return the ``split`` config block with defaults filled in, validated."""
    cfg = complete("split", split_cfg)
    check_split_args(cfg["val"], cfg["test"], cfg["seed"], cfg["max_train"])
    return cfg


def make_slices(
    source_cfg: dict[str, Any],
    split_cfg: dict[str, Any] | None,
    out_dir: str | Path,
    base_dir: str | Path | None = None,
    check: Callable[[list[str], dict[str, pd.DataFrame]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load a source, validate and split it per skill, and write the slices; return the manifest.

    ``split_cfg`` is ``{"seed", "val", "test", "max_train"}``. Relative source paths resolve
    against ``base_dir``; ``out_dir`` is used as given. `check` (skills, splits) runs last before
    writing and returns more manifest entries. Nothing is written unless every check passes.
    """
    split = _split_config(split_cfg)
    data = load_source(source_cfg, base_dir)
    splits = split_by_skill(data, split["val"], split["test"], split["seed"], split["max_train"])
    extra = {"source": {"kind": source_cfg["kind"], "origin": data.origin}, "split": split}
    if check is not None:
        extra.update(check(data.skills, splits))
    return write_slices(splits, data.skills, out_dir, extra)
