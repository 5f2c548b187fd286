"""Provenance stamps: the settings and code version an output was made with, kept inside it.

Snakemake re-runs a job when its params change only if it recorded the job's metadata, which it
does not for jobs that finished after snakemake itself was interrupted. So a stage that combines
several outputs (graph assembly, comparison, influence) checks each output's stamp against the
settings the config gives now, and refuses a mix, naming the files, the keys that differ and the
command that rebuilds them. A stamp is a JSON object of dotted config keys (``"graph.runs"``) and
``"code"`` (the producing script's code version), stored in a Parquet file's schema metadata or as
an entry of an `.npz` file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from skillmix.infra.errors import SkillmixInputError

METADATA_KEY = b"skillmix.stamp"
STAMP_ARRAY = "skillmix_stamp"
"""The name of the stamp in an `.npz` file (a 0-d string array of its JSON)."""
_MAX_LISTED = 5  # files and keys named in an error message


def write_stamped_parquet(frame: Any, path: str | os.PathLike, stamp: Mapping[str, Any] | None) -> None:
    """Write a pandas frame as Parquet at `path` (no index), `stamp` in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if stamp is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[METADATA_KEY] = json.dumps(stamp, sort_keys=True, default=str).encode("utf-8")
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)


def stamp_arrays(stamp: Mapping[str, Any]) -> dict[str, Any]:
    """The entry that carries `stamp` in an `.npz` file (`numpy.savez(path, **arrays, **entry)`)."""
    import numpy as np

    return {STAMP_ARRAY: np.array(json.dumps(stamp, sort_keys=True, default=str))}


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The stamp of a Parquet or `.npz` file; None when it has none (written before stamps, or not by
    skillmix)."""
    if str(path).endswith(".npz"):
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                return json.loads(str(data[STAMP_ARRAY])) if STAMP_ARRAY in data.files else None
        except (OSError, ValueError) as exc:
            raise SkillmixInputError(f"{path}: not a readable .npz file ({exc}); delete it, re-run") from exc
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise SkillmixInputError(f"{path}: not a readable Parquet file ({exc}); delete it, re-run") from exc
    raw = metadata.get(METADATA_KEY)
    return None if raw is None else json.loads(raw.decode("utf-8"))


def _flat(value: Any, key: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf value}."""
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for name, inner in value.items():
            flat.update(_flat(inner, f"{key}.{name}" if key else str(name)))
        return flat
    return {key: value}


def _canonical(value: Any) -> Any:
    """A value as JSON reads it back (tuples become lists, keys strings), for comparing."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def stamp_differences(found: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ, as ``"key: <there> there, <now> now"``; for a missing
    stamp, one line saying so."""
    if found is None:
        return ["no settings recorded (made by an older skillmix, or not by this workflow)"]
    there, now = _flat(_canonical(found)), _flat(_canonical(expected))
    lines = []
    for key in sorted(set(there) | set(now)):
        if there.get(key, "<unset>") != now.get(key, "<unset>"):
            lines.append(f"{key}: {there.get(key, '<unset>')!r} there, {now.get(key, '<unset>')!r} now")
    return lines


def check_stamps(expected: Mapping[str, Mapping[str, Any]], what: str) -> None:
    """Require every file in `expected` ({path: the stamp the config gives now}) to carry that stamp.

    Raises naming the files made with other settings (and how they differ) and the command that
    deletes them so that Snakemake makes them again; `what` names the outputs (e.g. "graph runs").
    """
    stale: dict[str, list[str]] = {}
    for path, stamp in expected.items():
        differences = stamp_differences(read_stamp(path), stamp)
        if differences:
            stale[str(path)] = differences
    if not stale:
        return
    lines = [
        f"  {path}: " + "; ".join(diffs[:_MAX_LISTED]) + (" …" if len(diffs) > _MAX_LISTED else "")
        for path, diffs in list(stale.items())[:_MAX_LISTED]
    ]
    more = f"\n  … and {len(stale) - _MAX_LISTED} more" if len(stale) > _MAX_LISTED else ""
    raise SkillmixInputError(
        f"{len(stale)} of {len(expected)} {what} were made with other settings than the config gives "
        "now (left from an interrupted run, whose finished jobs Snakemake did not record); refusing "
        "to combine them:\n" + "\n".join(lines) + more + "\nDelete them and run snakemake again, which "
        "makes them anew with the current settings:\n  rm " + " ".join(stale)
    )
