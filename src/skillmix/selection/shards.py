"""The gradient datastore's shard files: unit-normalised feature rows as float16 `.npy`; the
feature result of one shard job (`FeatureResult`), gathered over processes and written; and the
rows read back for scoring (`ShardedRows`, `RowPrefetcher`: reads overlapped with the scoring)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from skillmix.engine.projection import normalise_rows
from skillmix.infra import processes
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import atomic_file, write_json, write_parquet

PathLike = str | os.PathLike


def write_shard(features: torch.Tensor, path: PathLike) -> None:
    """Normalise rows (eps 1e-12), cast to float16 and save as `.npy`; the file appears only when complete.

    NaN rows stay NaN, so that scoring can find and report them.
    """
    if features.ndim != 2:
        raise SkillmixInputError(f"{path}: shard features must be 2-D [rows, d], got {tuple(features.shape)}")
    arr = normalise_rows(features.detach()).cpu().numpy().astype(np.float16)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def read_shard(path: PathLike, mmap: bool = True) -> np.ndarray:
    """A shard as a [rows, d] array, memory-mapped read-only unless mmap=False."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SkillmixInputError(f"{path}: cannot read feature shard ({e})") from e
    if arr.ndim != 2:
        raise SkillmixInputError(f"{path}: feature shard must be 2-D [rows, d], got shape {arr.shape}")
    return arr


@dataclass
class FeatureResult:
    """Features of one example set: per output width [kept, d] (unit rows), and bookkeeping."""

    features: dict[int, torch.Tensor]
    kept_ids: list[str]
    kept_skills: list[str]
    excluded_ids: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


def write_feature_shard(
    result: FeatureResult,
    feature_paths: dict[int, str | os.PathLike],
    index_path: str | os.PathLike,
    info_path: str | os.PathLike,
    info: dict[str, Any],
    stamp: dict[str, Any] | None = None,
) -> None:
    """Write one shard: a float16 `.npy` per width, the index Parquet (row, id, skill; carrying `stamp`,
    the settings it was made with), the info JSON."""
    missing = sorted(set(result.features) - set(feature_paths))
    if missing or set(feature_paths) - set(result.features):
        raise ValueError(
            f"feature widths {sorted(result.features)} do not match paths {sorted(feature_paths)}"
        )
    for d, path in feature_paths.items():
        write_shard(result.features[d], path)
    index = pd.DataFrame(
        {"row": range(len(result.kept_ids)), "id": result.kept_ids, "skill": result.kept_skills}
    )
    write_parquet(index, index_path, stamp=stamp)
    write_json({**info, **result.stats, "excluded_ids": result.excluded_ids, "rows": len(index)}, info_path)


def gather_features(result: FeatureResult) -> FeatureResult | None:
    """The features of every process of the job, rows in process order: the first process gets them
    all (examples and exclusions summed, Adam's share of large v' weighted by rows), the others None.
    With one process, `result` itself."""
    if processes.world_size() == 1:
        return result
    import torch.distributed as dist

    parts: list[Any] | None = [None] * processes.world_size() if processes.is_main() else None
    dist.gather_object(result, parts, dst=0)
    if parts is None:
        return None
    stats = dict(parts[0].stats)
    for key in ("examples", "excluded"):
        if key in stats:
            stats[key] = sum(part.stats[key] for part in parts)
    kept = [len(part.kept_ids) for part in parts]
    if "share_v_above_1e-9" in stats and sum(kept):
        shares = [part.stats.get("share_v_above_1e-9", 0.0) for part in parts]
        stats["share_v_above_1e-9"] = sum(s * k for s, k in zip(shares, kept, strict=True)) / sum(kept)
    return FeatureResult(
        {d: torch.cat([part.features[d] for part in parts]) for d in parts[0].features},
        [i for part in parts for i in part.kept_ids],
        [s for part in parts for s in part.kept_skills],
        [i for part in parts for i in part.excluded_ids],
        stats,
    )


# Reading rows back


def shard_layout(path: PathLike) -> tuple[tuple[int, int], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a 2-D C-order `.npy` shard, read from its header.

    A missing, unreadable or truncated file (fewer bytes than its header promises) is a
    SkillmixInputError naming it.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise SkillmixInputError(f"{path}: cannot read feature shard header ({e})") from e
    if len(shape) != 2 or fortran or dtype.hasobject:
        raise SkillmixInputError(f"{path}: feature shard must be a 2-D C-order numeric array, got {shape}")
    size = Path(path).stat().st_size
    if size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise SkillmixInputError(f"{path}: feature shard is truncated ({size} bytes for shape {shape})")
    return (int(shape[0]), int(shape[1])), dtype, offset


@dataclass(frozen=True)
class RowRead:
    """One positioned read: `rows` rows of width `d` at byte `offset` of `path`; they are rows
    `out`..`out + rows` of the requested range."""

    path: Path
    offset: int
    rows: int
    d: int
    dtype: np.dtype
    out: int


class ShardedRows:
    """Row ranges of a list of shards, read as if they were one array (headers checked up front)."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = [Path(p) for p in paths]
        self.layouts = [shard_layout(p) for p in self.paths]
        dims = {shape[1] for shape, _, _ in self.layouts}
        if len(dims) > 1:
            names = [str(p) for p in self.paths]
            raise SkillmixInputError(f"candidate shards {names} differ in width: {dims}")
        self.d = dims.pop() if dims else None
        self.offsets = np.cumsum([0] + [shape[0] for shape, _, _ in self.layouts])
        self.n = int(self.offsets[-1])

    def reads(self, start: int, stop: int, read_rows: int) -> Iterator[RowRead]:
        """The reads of rows start..stop, at most `read_rows` rows each, in row order."""
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for s in range(max(first, 0), len(self.paths)):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            if lo >= stop:
                break
            (_, d), dtype, offset = self.layouts[s]
            for pos in range(max(start, lo) - lo, min(stop, hi) - lo, read_rows):
                k = min(read_rows, min(stop, hi) - lo - pos)
                yield RowRead(self.paths[s], offset + pos * d * dtype.itemsize, k, d, dtype, lo + pos - start)


class RowPrefetcher:
    """The rows of a sequence of `RowRead`s, read by a background thread ahead of their use.

    `depth` reads wait ready in a bounded queue while the caller works on the current one, in
    depth + 1 reused buffers of `read_rows` rows, so memory stays (depth + 1) × read_rows × d ×
    itemsize bytes however long the sequence. File reads release the GIL, so reading overlaps
    the caller's computing. Iterating yields (read, rows [read.rows, d]); the rows are valid until
    the next item is asked for. A read error (a file gone or shorter than its header said) is
    raised in the caller as SkillmixInputError; leaving the `with` block stops the thread.
    """

    def __init__(self, reads: Iterable[RowRead], read_rows: int, depth: int = 2) -> None:
        self._reads = reads
        self._read_rows = int(read_rows)
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=max(int(depth), 1))
        self._slots = max(int(depth), 1) + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shard-prefetch", daemon=True)

    def __enter__(self) -> RowPrefetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _buffer(self, nbytes: int) -> np.ndarray | None:
        if self._slots:  # allocate lazily, at most depth + 1
            self._slots -= 1
            return np.empty(nbytes, dtype=np.uint8)
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _run(self) -> None:
        handle, name = None, None
        try:
            for read in self._reads:
                nbytes = read.rows * read.d * read.dtype.itemsize
                buf = self._buffer(self._read_rows * read.d * read.dtype.itemsize)
                if buf is None:
                    return
                if buf.nbytes < nbytes:
                    buf = np.empty(nbytes, dtype=np.uint8)
                if read.path != name:
                    if handle is not None:
                        handle.close()
                    handle, name = open(read.path, "rb", buffering=0), read.path
                view, got = memoryview(buf)[:nbytes], 0
                handle.seek(read.offset)
                while got < nbytes and (n := handle.readinto(view[got:])):
                    got += n
                if got != nbytes:
                    raise SkillmixInputError(f"{read.path}: feature shard ended early")
                if not self._put((read, buf)):
                    return
            self._put(None)
        except (OSError, SkillmixInputError) as e:
            err = e if isinstance(e, SkillmixInputError) else SkillmixInputError(f"cannot read shard ({e})")
            self._put(err)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            self._put(e)
        finally:
            if handle is not None:
                handle.close()

    def __iter__(self) -> Iterator[tuple[RowRead, np.ndarray]]:
        while True:
            item = self._ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            read, buf = item
            nbytes = read.rows * read.d * read.dtype.itemsize
            yield read, buf[:nbytes].view(read.dtype).reshape(read.rows, read.d)
            self._free.put(buf)
