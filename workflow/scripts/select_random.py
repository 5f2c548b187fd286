"""The random baseline: as many pool examples as LESS selects, uniformly at random."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.data.export import write_training_files  # noqa: E402
from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.less.selection import random_examples, selection_size, write_jsonl  # noqa: E402

s = snakemake.params.selection
pool = pd.read_parquet(snakemake.input.pool)
chosen = random_examples(pool, selection_size(len(pool), s["k"], s["fraction"]), s["seed"])
log.info("random selection: %d of %d", len(chosen), len(pool))
write_parquet(chosen, snakemake.output.parquet)
write_jsonl(chosen, snakemake.output.jsonl)
write_training_files(chosen, snakemake.output.messages, snakemake.output.prompt_completion)
