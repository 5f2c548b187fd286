"""One selection method (the registry's, by name): as many pool examples as the settings ask for."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.data.export import write_training_files  # noqa: E402
from skillmix.infra.config import complete  # noqa: E402
from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.registry import SELECTIONS  # noqa: E402
from skillmix.selection.selected import write_jsonl  # noqa: E402

name, out = snakemake.wildcards.selection, snakemake.output
selector = SELECTIONS[name].load()(complete("select", {"selection": snakemake.params.selection}))
pool = pd.read_parquet(snakemake.input.pool)
extra = {k: pd.read_parquet(snakemake.input[k]) for k in ("scores", "target") if k in snakemake.input.keys()}
chosen = selector.select(pool, selector.size(len(pool)), **extra)
log.info("%s selection: %d of %d", name, len(chosen), len(pool))
write_parquet(chosen, out.parquet)
write_jsonl(chosen, out.jsonl)
write_training_files(chosen, out.messages, out.prompt_completion)
