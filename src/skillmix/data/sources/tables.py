"""Tabular sources: one row per example, one column naming the row's skill; reading the files.

Reads JSON lines, JSON (a list of records), Parquet and CSV files with the standard library,
pandas and pyarrow, and Hugging Face ``datasets`` tables, either a ``save_to_disk`` directory
(format ``hf_disk``) or ``datasets.load_dataset(hf_name, data_files=...)`` with a packaged builder
or a local builder directory (format ``hf``). Nothing is downloaded. A row is plain text, a
prompt/answer pair, or a chat (``messages_column``: a list of {role, content} turns).

Bytes that are not UTF-8 and truncated ``.gz`` files are reported with their file and line. The
columns read are then checked cell by cell and become the examples in ``table_cells``.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from skillmix.data.sources import SourceData, resolve_path
from skillmix.data.sources.table_cells import Columns, build_source, check_column_config
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError

FORMATS: tuple[str, ...] = ("auto", "jsonl", "json", "parquet", "csv", "hf_disk", "hf")
_SUFFIX_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}
_GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
# what reading a text file whole (json, pandas) raises on bad bytes or a broken .gz
READ_ERRORS: tuple[type[Exception], ...] = (UnicodeDecodeError, *_GZIP_ERRORS)


def _open_text(path: Path):
    """Open ``path`` for reading text, transparently decompressing a ``.gz`` file."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines (from 1) of a UTF-8 text file, optionally gzipped; raise naming the file
    and line on bytes that are not UTF-8, or on a truncated or corrupt ``.gz``."""
    lineno = 0
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise SkillmixInputError(
                        f"{path}: line {lineno} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                        f"{exc.start + 1} of the line); save the file as UTF-8"
                    ) from exc
    except _GZIP_ERRORS as exc:
        where = f"reading stopped after line {lineno}" if lineno else "not even line 1 could be read"
        raise SkillmixInputError(f"{path}: truncated or corrupt gzip file ({exc}); {where}") from exc


def read_error(path: Path, exc: Exception) -> SkillmixInputError:
    """The error for ``exc`` (one of READ_ERRORS) met reading ``path`` whole, naming the line it
    concerns (found by reading the file again line by line)."""
    try:
        for _ in text_lines(path):
            pass
    except SkillmixInputError as located:
        return located
    return SkillmixInputError(f"{path}: could not be read as UTF-8 text ({exc})")


def _records_to_columns(records: list[Any], origin: str) -> Columns:
    """Turn a list of JSON objects into column lists (keys absent from a record become None)."""
    names: dict[str, None] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise SkillmixInputError(
                f"{origin}: record {index} is a {type(record).__name__}, expected a JSON object"
            )
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def _read_jsonl(path: Path) -> Columns:
    """Read a JSON-lines file (optionally gzipped): one JSON object per non-blank line."""
    records = []
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SkillmixInputError(f"{path}: line {lineno} is not valid JSON ({exc})") from exc
    return _records_to_columns(records, str(path))


def _read_json(path: Path) -> Columns:
    """Read a JSON file (optionally gzipped) holding a list of objects, or an object whose
    ``examples`` key holds that list (the BIG-Bench task-file layout)."""
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise SkillmixInputError(f"{path}: not valid JSON ({exc})") from exc
    except READ_ERRORS as exc:
        raise read_error(path, exc) from exc
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        data = data["examples"]
    if not isinstance(data, list):
        raise SkillmixInputError(
            f"{path}: expected a JSON list of objects (or an object with an 'examples' list), got a "
            f"{type(data).__name__} (use format jsonl for one object per line)"
        )
    return _records_to_columns(data, str(path))


def _check_csv_quotes(path: Path) -> None:
    """Read a CSV file again with the standard library's strict parser.

    A quoted cell must end in a quote followed by a comma or the line's end. A stray quote at the
    start of a cell breaks that rule where the next quote of the file closes it; pandas reads on and
    makes every line up to that quote part of one cell, several examples merged into one. Raises
    naming the row's first line and the line where the parser stopped.
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 2**31 - 1))  # a long text cell is no error
    start = 1
    reader = csv.reader((line for _, line in text_lines(path)), strict=True)
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SkillmixInputError(
            f"{path}: the CSV row starting at line {start} is malformed ({exc}, at line "
            f"{reader.line_num}): a quote that opens a cell must close it right before a comma or the "
            "line's end. A stray quote at the start of a cell makes the lines up to the next quote one "
            'cell, merging several rows into one example; write a cell holding quotes as "..." with '
            'each inner quote doubled ("")'
        ) from exc
    finally:
        csv.field_size_limit(limit)


def _read_csv(path: Path) -> Columns:
    """Read a CSV file as strings; empty cells stay empty strings. Rows merged by a stray quote are
    refused (:func:`_check_csv_quotes`)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SkillmixInputError(f"{path}: not a readable CSV file ({exc})") from exc
    except READ_ERRORS as exc:
        raise read_error(path, exc) from exc
    _check_csv_quotes(path)
    return {str(name): frame[name].tolist() for name in frame.columns}


def _read_parquet(path: Path) -> Columns:
    """Read a Parquet file with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except (pa.ArrowException, OSError) as exc:
        raise SkillmixInputError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read_hf_disk(path: Path, split: str) -> Columns:
    """Read a ``datasets`` ``save_to_disk`` directory, taking ``split`` from a DatasetDict."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise SkillmixInputError(f"{path}: not a datasets save_to_disk directory ({exc})") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SkillmixInputError(
                f"{path}: split {split!r} (source.table.hf_split) not found; "
                f"available splits: {sorted(loaded)}"
            )
        loaded = loaded[split]
    return loaded.to_dict()


def _resolve_data_files(data_files: Any, base_dir: str | Path | None) -> Any:
    """Resolve the relative paths in ``data_files`` (a path, list, or split -> paths mapping)."""
    if data_files is None:
        return None
    if isinstance(data_files, dict):
        return {split: _resolve_data_files(files, base_dir) for split, files in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [_resolve_data_files(files, base_dir) for files in data_files]
    path = resolve_path(data_files, "source.table.data_files", base_dir)
    if not any(char in str(path) for char in "*?[") and not path.exists():
        raise SkillmixInputError(f"config source.table.data_files: file {path} does not exist")
    return str(path)


def _read_hf(cfg: dict[str, Any], base_dir: str | Path | None) -> tuple[Columns, str]:
    """Read ``datasets.load_dataset(hf_name, data_files=..., split=hf_split)``, local only."""
    import datasets
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    name = cfg["hf_name"]
    if not isinstance(name, str) or not name:
        raise SkillmixInputError(
            f"config source.table.hf_name: format 'hf' needs a datasets builder name, got {name!r}"
        )
    if name not in _PACKAGED_DATASETS_MODULES:
        local = resolve_path(name, "source.table.hf_name", base_dir)
        if not local.is_dir():
            raise SkillmixInputError(
                f"config source.table.hf_name: {name!r} is neither a packaged datasets builder "
                f"({', '.join(sorted(_PACKAGED_DATASETS_MODULES))}) nor a local directory; "
                "skillmix never downloads datasets"
            )
        name = str(local)
    data_files = _resolve_data_files(cfg["data_files"], base_dir)
    origin = f"datasets.load_dataset({name!r}, data_files={data_files!r}, split={cfg['hf_split']!r})"
    try:
        dataset = datasets.load_dataset(name, data_files=data_files, split=cfg["hf_split"])
    except (FileNotFoundError, ValueError) as exc:
        raise SkillmixInputError(f"{origin}: could not load ({exc})") from exc
    return dataset.to_dict(), origin


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def _detect_format(path: Path) -> str:
    """Pick the format of ``path`` from its suffix (ignoring ``.gz``); a directory is hf_disk."""
    if path.is_dir():
        return "hf_disk"
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    raise SkillmixInputError(
        f"{path}: cannot tell the format from the suffix; set source.table.format to one of "
        f"{[fmt for fmt in FORMATS if fmt != 'auto']}"
    )


def read_columns(path: str | Path, fmt: str = "auto") -> Columns:
    """The columns of one JSON-lines, JSON, Parquet or CSV file (format from the suffix by default)."""
    path = Path(path)
    if not path.is_file():
        raise SkillmixInputError(f"{path}: file does not exist")
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt not in _READERS:
        raise SkillmixInputError(f"{path}: format must be one of {sorted(_READERS)}, got {fmt!r}")
    return _READERS[fmt](path)


def load_table(cfg: dict[str, Any] | None, base_dir: str | Path | None = None) -> SourceData:
    """Load the table described by the ``source.table`` config block into a SourceData.

    Skills are ordered by sorted name; rows keep the file's order. Relative paths resolve
    against ``base_dir`` (default: the current directory).
    """
    cfg = complete("source.table", cfg)
    fmt = cfg["format"]
    if fmt == "hf":
        check_column_config(cfg, f"datasets.load_dataset({cfg['hf_name']!r})")
        columns, origin = _read_hf(cfg, base_dir)
        return build_source(columns, cfg, origin)
    path = resolve_path(cfg["path"], "source.table.path", base_dir)
    if not path.exists():
        raise SkillmixInputError(f"config source.table.path: file {path} does not exist")
    origin = str(path)
    check_column_config(cfg, origin)
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "hf_disk":
        columns = _read_hf_disk(path, cfg["hf_split"])
    elif path.is_dir():
        raise SkillmixInputError(f"{path}: is a directory, but source.table.format is {fmt!r}")
    else:
        columns = _READERS[fmt](path)
    return build_source(columns, cfg, origin)
