"""Slice the source into per-skill train/val/test Parquet files and a manifest, after checking the
whole config against the skills (nothing is written if a check fails)."""

from pathlib import Path

from skillmix.data.slicing import make_slices
from skillmix.infra.jobs import start_log
from skillmix.preflight import slice_checks

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)
manifest = make_slices(
    snakemake.params.source,
    snakemake.params.split,
    Path(snakemake.output.manifest).parent,
    check=slice_checks(snakemake.config),
)
log.info("sliced %d skills: %s", len(manifest["skills"]), [s["name"] for s in manifest["skills"]])
