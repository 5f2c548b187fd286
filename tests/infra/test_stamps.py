"""Provenance stamps: written into Parquet outputs, compared by the stages that combine outputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import write_parquet
from skillmix.infra.stamps import check_stamps, read_stamp, stamp_differences

NOW = {"graph.runs": {"lr": 0.001, "steps": 6}, "model": {"kind": "tiny"}, "code": "abc"}
OLD = {"graph.runs": {"lr": 0.01, "steps": 6}, "model": {"kind": "tiny"}, "code": "abc"}


def frame() -> pd.DataFrame:
    return pd.DataFrame({"step": [0, 1], "loss": [1.0, 0.5]})


def test_a_stamp_travels_with_the_file_and_leaves_the_table_unchanged(tmp_path: Path) -> None:
    write_parquet(frame(), tmp_path / "a.parquet", stamp=NOW)
    write_parquet(frame(), tmp_path / "b.parquet")
    assert read_stamp(tmp_path / "a.parquet") == NOW
    assert read_stamp(tmp_path / "b.parquet") is None
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), frame())


def test_differences_are_named_by_dotted_key() -> None:
    assert stamp_differences(NOW, NOW) == []
    assert stamp_differences(OLD, NOW) == ["graph.runs.lr: 0.01 there, 0.001 now"]
    assert stamp_differences({**NOW, "code": "old"}, NOW) == ["code: 'old' there, 'abc' now"]
    assert "no settings recorded" in stamp_differences(None, NOW)[0]
    # tuples and lists are the same setting once written
    assert stamp_differences({"dims": [8, 16]}, {"dims": (8, 16)}) == []


def test_a_mix_of_settings_is_refused_naming_the_stale_files(tmp_path: Path) -> None:
    paths = [tmp_path / f"run{i}.parquet" for i in range(4)]
    for i, path in enumerate(paths):
        write_parquet(frame(), path, stamp=OLD if i in (1, 3) else NOW)
    with pytest.raises(SkillmixInputError) as caught:
        check_stamps({p: NOW for p in paths}, "graph runs")
    message = str(caught.value)
    assert "2 of 4 graph runs were made with other settings" in message
    assert f"{paths[1]}: graph.runs.lr: 0.01 there, 0.001 now" in message
    assert f"rm {paths[1]} {paths[3]}" in message
    assert "run0.parquet" not in message and "run2.parquet" not in message  # only the stale ones
    check_stamps({p: NOW for p in (paths[0], paths[2])}, "graph runs")  # consistent: passes


def test_an_npz_carries_its_stamp_and_its_arrays_read_back_without_it(tmp_path: Path) -> None:
    import numpy as np

    from skillmix.kernel.task_kernels import read_arrays, write_arrays

    arrays = {"x": np.arange(3.0)}
    write_arrays(arrays, tmp_path / "a.npz", stamp=NOW)
    write_arrays(arrays, tmp_path / "b.npz", stamp=OLD)
    assert read_stamp(tmp_path / "a.npz") == NOW
    assert list(read_arrays(tmp_path / "a.npz")) == ["x"]
    with pytest.raises(
        SkillmixInputError, match=r"(?s)1 of 2 kernel feature shards.*b\.npz: graph\.runs\.lr"
    ):
        check_stamps({tmp_path / "a.npz": NOW, tmp_path / "b.npz": NOW}, "kernel feature shards")
