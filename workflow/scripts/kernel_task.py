"""The k-shot classification task of the eNTK stage, from the slices of the kernel skills."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_json, write_parquet  # noqa: E402
from skillmix.kernel.task import build_task  # noqa: E402

k = snakemake.params.kernel
wanted = set(k["skills"])
frames = {}
for split in ("train", "val", "test"):
    parts = [pd.read_parquet(p) for p in snakemake.input[split]]
    parts = [f for f in parts if len(f) and (not wanted or f["skill"].iloc[0] in wanted)]
    frames[split] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
task, words = build_task(frames, k["label_split"], k["label_words"], k["k_shot"], k["seed"], k["max_eval"])
log.info("kernel task: label words %s; rows per split %s", words, task["split"].value_counts().to_dict())
write_parquet(task, snakemake.output.task)
write_json(words, snakemake.output.words)
