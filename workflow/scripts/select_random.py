"""The random baseline: as many pool examples as LESS selects, uniformly at random."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.data.export import write_training_files  # noqa: E402
from skillmix.infra.config import complete  # noqa: E402
from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.registry import SELECTIONS  # noqa: E402
from skillmix.selection.selected import write_jsonl  # noqa: E402

selector = SELECTIONS["random"].load()(complete("select", {"selection": snakemake.params.selection}))
pool = pd.read_parquet(snakemake.input.pool)
chosen = selector.select(pool, selector.size(len(pool)))
log.info("random selection: %d of %d", len(chosen), len(pool))
write_parquet(chosen, snakemake.output.parquet)
write_jsonl(chosen, snakemake.output.jsonl)
write_training_files(chosen, snakemake.output.messages, snakemake.output.prompt_completion)
