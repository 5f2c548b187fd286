"""graph.runs.units_per_job: graph units run several to a job (rule graph_run_batch) give the
same curves, byte for byte, and the same graph as one unit a job (rule graph_run)."""

from __future__ import annotations

import pandas as pd
import yaml
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, run_ok, write_yaml

from skillmix.graph.units import graph_units

GRAPH = "results/graph/brute_force"
UNITS_PER_JOB = 4  # the tiny config's 6 units: batches 1-of-2 (4 units) and 2-of-2 (2 units)


def test_batched_units_give_the_same_curves_and_graph(tmp_path):
    one, batched = tmp_path / "one", tmp_path / "batched"
    one.mkdir()
    batched.mkdir()
    run_ok(one, f"{GRAPH}/adjacency.npy")
    batches = write_yaml(tmp_path / "batches.yaml", {"graph": {"runs": {"units_per_job": UNITS_PER_JOB}}})
    run_ok(batched, f"{GRAPH}/adjacency.npy", configs=(MAIN_CONFIG, TINY_CONFIG, batches))

    slugs = [s["slug"] for s in yaml.safe_load((one / "results/slices/manifest.json").read_text())["skills"]]
    units = graph_units("brute_force", slugs)
    assert len(units) == 6
    chunks = {"1-of-2": units[:UNITS_PER_JOB], "2-of-2": units[UNITS_PER_JOB:]}
    assert sorted(p.name for p in (batched / "logs/graph_run/brute_force").iterdir()) == [
        f"batch-{name}.log" for name in chunks
    ]
    assert not (batched / GRAPH / "runs").exists()
    for name, chunk in chunks.items():
        folder = batched / GRAPH / "batches" / name
        # besides the curves, the folder holds Snakemake's .snakemake_timestamp
        written = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert written == sorted(f"{unit}.parquet" for unit in chunk)
        for unit in chunk:
            alone, in_batch = one / GRAPH / "runs" / f"{unit}.parquet", folder / f"{unit}.parquet"
            pd.testing.assert_frame_equal(pd.read_parquet(alone), pd.read_parquet(in_batch), check_exact=True)
            assert alone.read_bytes() == in_batch.read_bytes(), unit
    for name in ("adjacency.npy", "raw.parquet", "skills.json"):
        assert (one / GRAPH / name).read_bytes() == (batched / GRAPH / name).read_bytes(), name


def test_the_batches_override_sets_five_units_a_job_and_no_profile_loads_it():
    """profiles/default/graph_batches.yaml is given after config.yaml; a profile's `configfile`
    would replace config.yaml itself (tests/workflow/test_profiles.py)."""
    batches = yaml.safe_load((REPO / "profiles/default/graph_batches.yaml").read_text())
    assert batches == {"graph": {"runs": {"units_per_job": 5}}}
    for name in ("default", "slurm", "local-gpu"):
        profile = yaml.safe_load((REPO / "profiles" / name / "profile.yaml").read_text())
        assert "configfile" not in profile and "configfiles" not in profile, name
