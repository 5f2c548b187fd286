"""Tabular sources: one row per example, one column naming the row's skill.

Reads JSON lines, JSON (a list of records), Parquet and CSV files with the standard library,
pandas and pyarrow, and Hugging Face ``datasets`` tables, either a ``save_to_disk`` directory
(format ``hf_disk``) or ``datasets.load_dataset(hf_name, data_files=...)`` with a packaged builder
or a local builder directory (format ``hf``). Nothing is downloaded. A row is plain text, a
prompt/answer pair, or a chat (``messages_column``: a list of {role, content} turns).

Cells are checked strictly: the skill, id, text, prompt and answer columns hold strings or numbers
(never lists, dicts or bytes), the skill column one kind of the two, and skill names that differ
only by letter case or surrounding whitespace stop the load unless ``merge_skill_names`` is set.
Bytes that are not UTF-8 and truncated ``.gz`` files are reported with their file and line.
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
import numbers
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skillmix.data.chat import chat_fields, parse_messages
from skillmix.data.sources import SourceData, examples_frame, resolve_path
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
_MAX_NAMED = 5  # offending values listed in an error message
_GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
# what reading a text file whole (json, pandas) raises on bad bytes or a broken .gz
READ_ERRORS: tuple[type[Exception], ...] = (UnicodeDecodeError, *_GZIP_ERRORS)
_SCALARS = (str, numbers.Number, np.bool_, np.datetime64, np.timedelta64, datetime.date, datetime.time)

Columns = dict[str, list[Any]]


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


def _read_csv(path: Path) -> Columns:
    """Read a CSV file as strings; empty cells stay empty strings."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SkillmixInputError(f"{path}: not a readable CSV file ({exc})") from exc
    except READ_ERRORS as exc:
        raise read_error(path, exc) from exc
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


def _is_missing(value: Any) -> bool:
    """Return True for None and NaN cells."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _as_text(value: Any) -> str:
    """Return a non-missing cell as a string (missing cells become the empty string)."""
    return "" if _is_missing(value) else str(value)


def _column(columns: Columns, cfg: dict[str, Any], key: str, origin: str) -> list[Any]:
    """Return the column named by config ``key``; raise listing the available columns."""
    name = cfg[key]
    if name not in columns:
        raise SkillmixInputError(
            f"{origin}: column {name!r} (source.table.{key}) not found; available columns: {list(columns)}"
        )
    return columns[name]


def _row_ids(id_values: list[Any] | None, cfg: dict[str, Any], n_rows: int, origin: str) -> list[str]:
    """Return the row ids: the id column as strings, or ``row-<index>`` zero-padded."""
    if id_values is None:
        width = max(6, len(str(n_rows - 1)))
        return [f"row-{index:0{width}d}" for index in range(n_rows)]
    ids = [_as_text(value) for value in id_values]
    empty = [index for index, value in enumerate(ids) if not value.strip()]
    if empty:
        raise SkillmixInputError(
            f"{origin}: column {cfg['id_column']!r} (source.table.id_column) is empty or null "
            f"in row(s) {empty[:_MAX_NAMED]}"
        )
    counts = pd.Series(ids).value_counts()
    duplicated = counts[counts > 1].index.tolist()
    if duplicated:
        raise SkillmixInputError(
            f"{origin}: column {cfg['id_column']!r} (source.table.id_column) has "
            f"{len(duplicated)} duplicated id(s), e.g. {sorted(duplicated)[:_MAX_NAMED]}"
        )
    return ids


def _check_column_config(cfg: dict[str, Any], origin: str) -> None:
    """Require one of ``text_column``, ``messages_column``, or ``prompt_column`` with ``answer_column``."""
    if cfg["messages_column"] is not None:
        others = [k for k in ("text_column", "prompt_column", "answer_column") if cfg[k] is not None]
        if others:
            raise SkillmixInputError(
                f"{origin}: config source.table sets messages_column and {', '.join(others)}; "
                "a chat table gives messages_column only"
            )
        return
    has_text = cfg["text_column"] is not None
    has_prompt = cfg["prompt_column"] is not None
    has_answer = cfg["answer_column"] is not None
    if has_text and (has_prompt or has_answer):
        raise SkillmixInputError(
            f"{origin}: config source.table sets both text_column and prompt_column/answer_column; "
            "give either text_column (plain text) or prompt_column + answer_column"
        )
    if not has_text and not (has_prompt and has_answer):
        raise SkillmixInputError(
            f"{origin}: config source.table needs either text_column (plain text) or both "
            f"prompt_column and answer_column; got prompt_column={cfg['prompt_column']!r}, "
            f"answer_column={cfg['answer_column']!r}"
        )


def _kind(value: Any) -> str:
    """The type of a cell value as an error message names it, e.g. "a list"."""
    if isinstance(value, np.ndarray):
        return "a numpy array"
    if isinstance(value, bytes):
        return "bytes"
    name = type(value).__name__
    return f"an {name}" if name[0].lower() in "aeiou" else f"a {name}"


def _check_cells(
    values: list[Any], key: str, cfg: dict[str, Any], origin: str, ids: list[str] | None
) -> None:
    """Reject a cell of column ``key`` that is not a string, number or other scalar (a list, dict,
    bytes, array...); rows are named by ``ids``, or by index when None."""
    expected = "a string or a number" if key in ("skill_column", "id_column") else "text"
    for index, value in enumerate(values):
        if not (_is_missing(value) or isinstance(value, _SCALARS)):
            row = ids[index] if ids is not None else f"{index} (0-based)"
            raise SkillmixInputError(
                f"{origin}: column {cfg[key]!r} (source.table.{key}) holds {_kind(value)} in row {row}; "
                f"expected {expected}"
            )


def _check_skill_types(values: list[Any], ids: list[str], cfg: dict[str, Any], origin: str) -> None:
    """Reject a skill column mixing strings with numbers (skill 1 and skill "1" would become one)."""
    first: dict[bool, tuple[str, Any]] = {}
    for row_id, value in zip(ids, values, strict=True):
        if not _is_missing(value):
            first.setdefault(isinstance(value, str), (row_id, value))
            if len(first) == 2:
                (text_id, text), (other_id, other) = first[True], first[False]
                raise SkillmixInputError(
                    f"{origin}: column {cfg['skill_column']!r} (source.table.skill_column) holds both "
                    f"{type(other).__name__} and str skills (row {other_id}: {other!r}; row {text_id}: "
                    f"{text!r}); give every skill as a string, or every skill as a number"
                )


def _merged_skill_names(skills: list[str], ids: list[str], cfg: dict[str, Any], origin: str) -> list[str]:
    """The skills, with names that differ only by letter case or surrounding whitespace made one
    (named by the first spelling in the file, stripped) if ``merge_skill_names``; else raise naming them."""
    spellings: dict[str, dict[str, str]] = {}  # folded name -> spelling -> first row id
    for row_id, skill in zip(ids, skills, strict=True):
        spellings.setdefault(skill.strip().casefold(), {}).setdefault(skill, row_id)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if not clashes:
        return skills
    if not cfg["merge_skill_names"]:
        named = "; ".join(
            ", ".join(f"{name!r} (row {row_id})" for name, row_id in list(group.items())[:_MAX_NAMED])
            for group in clashes[:_MAX_NAMED]
        )
        raise SkillmixInputError(
            f"{origin}: column {cfg['skill_column']!r} (source.table.skill_column) has skill names that "
            f"differ only by letter case or surrounding whitespace: {named}; set "
            "source.table.merge_skill_names: true to make each group one skill, or fix the data"
        )
    rename = {name: next(iter(group)).strip() for group in clashes for name in group}
    return [rename.get(skill, skill) for skill in skills]


def _skills(values: list[Any], ids: list[str], cfg: dict[str, Any], origin: str) -> list[str]:
    """The checked skill of each row, as a string."""
    _check_skill_types(values, ids, cfg, origin)
    skills = [_as_text(value) for value in values]
    for row_id, skill in zip(ids, skills, strict=True):
        if not skill.strip():
            raise SkillmixInputError(
                f"{origin}: row {row_id} has an empty or null skill in column "
                f"{cfg['skill_column']!r} (source.table.skill_column)"
            )
    return _merged_skill_names(skills, ids, cfg, origin)


def _build_source(columns: Columns, cfg: dict[str, Any], origin: str) -> SourceData:
    """Validate the configured columns of a read table and turn its rows into a SourceData."""
    keys = ["skill_column", "id_column", "text_column", "prompt_column", "answer_column", "messages_column"]
    values = {key: _column(columns, cfg, key, origin) for key in keys if cfg[key] is not None}
    n_rows = len(values["skill_column"])
    if n_rows == 0:
        raise SkillmixInputError(f"{origin}: the table has no rows")
    if "id_column" in values:
        _check_cells(values["id_column"], "id_column", cfg, origin, None)
    ids = _row_ids(values.get("id_column"), cfg, n_rows, origin)
    for key in ("skill_column", "text_column", "prompt_column", "answer_column"):
        if key in values:
            _check_cells(values[key], key, cfg, origin, ids)
    skills = _skills(values["skill_column"], ids, cfg, origin)
    chats = [""] * n_rows
    if "messages_column" in values:
        fields = [
            chat_fields(parse_messages(value, f"{origin}: row {row_id}, column {cfg['messages_column']!r}"))
            for row_id, value in zip(ids, values["messages_column"], strict=True)
        ]
        prompts, answers, texts, chats = (
            [f[k] for f in fields] for k in ("prompt", "answer", "text", "messages")
        )
        empty = [row_id for row_id, a in zip(ids, answers, strict=True) if not a.strip()]
        if empty:
            raise SkillmixInputError(
                f"{origin}: row(s) {empty[:_MAX_NAMED]} end with an empty assistant turn in column "
                f"{cfg['messages_column']!r} (source.table.messages_column)"
            )
    elif "text_column" in values:
        texts = [_as_text(value) for value in values["text_column"]]
        for row_id, skill, text in zip(ids, skills, texts, strict=True):
            if not text.strip():
                raise SkillmixInputError(
                    f"{origin}: row {row_id} (skill {skill!r}) has an empty or null text in column "
                    f"{cfg['text_column']!r} (source.table.text_column)"
                )
        prompts = [""] * n_rows
        answers = [""] * n_rows
    else:
        prompts = [_as_text(value) for value in values["prompt_column"]]
        answers = [_as_text(value) for value in values["answer_column"]]
        for row_id, skill, prompt, answer in zip(ids, skills, prompts, answers, strict=True):
            for key, value in (("prompt_column", prompt), ("answer_column", answer)):
                if not value.strip():
                    raise SkillmixInputError(
                        f"{origin}: row {row_id} (skill {skill!r}) has an empty or null "
                        f"{key.split('_')[0]} in column {cfg[key]!r} (source.table.{key})"
                    )
        texts = [f"{prompt} {answer}" for prompt, answer in zip(prompts, answers, strict=True)]
    examples = examples_frame(
        {"id": ids, "skill": skills, "prompt": prompts, "answer": answers, "text": texts, "messages": chats}
    )
    return SourceData(examples=examples, skills=sorted(set(skills)), origin=origin)


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
        _check_column_config(cfg, f"datasets.load_dataset({cfg['hf_name']!r})")
        columns, origin = _read_hf(cfg, base_dir)
        return _build_source(columns, cfg, origin)
    path = resolve_path(cfg["path"], "source.table.path", base_dir)
    if not path.exists():
        raise SkillmixInputError(f"config source.table.path: file {path} does not exist")
    origin = str(path)
    _check_column_config(cfg, origin)
    if fmt == "auto":
        fmt = _detect_format(path)
    if fmt == "hf_disk":
        columns = _read_hf_disk(path, cfg["hf_split"])
    elif path.is_dir():
        raise SkillmixInputError(f"{path}: is a directory, but source.table.format is {fmt!r}")
    else:
        columns = _READERS[fmt](path)
    return _build_source(columns, cfg, origin)
