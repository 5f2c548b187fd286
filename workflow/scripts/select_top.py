"""LESS selection: the top-scored candidates, their composition per skill, the score distribution."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.data.export import write_training_files  # noqa: E402
from skillmix.infra.config import complete  # noqa: E402
from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.infra.registry import SELECTIONS  # noqa: E402
from skillmix.plotting import plot_composition, plot_scores  # noqa: E402
from skillmix.selection.selected import answer_composition, composition, write_jsonl  # noqa: E402

settings, out = complete("select", {"selection": snakemake.params.selection}), snakemake.output
selector = SELECTIONS["less"].load()(settings)
pool = pd.read_parquet(snakemake.input.pool)
scores = pd.read_parquet(snakemake.input.scores)
target = pd.read_parquet(snakemake.input.target)
chosen = selector.select(pool, selector.size(len(pool)), scores=scores, target=target)
selections = {"less": chosen, "random": pd.read_parquet(snakemake.input.random)}
table = composition(pool, selections)
answers = answer_composition(pool, {"target": target, **selections})
log.info(
    "selected %d of %d (balance %s):\n%s",
    len(chosen),
    len(pool),
    settings["selection"]["balance"],
    table.to_string(index=False),
)
log.info("answers of the pool, the target and the selections:\n%s", answers.to_string(index=False))
write_parquet(chosen, out.parquet)
write_jsonl(chosen, out.jsonl)
write_training_files(chosen, out.messages, out.prompt_completion)
write_parquet(table, out.composition)
write_parquet(answers, out.answers)
plot_composition(table, out.composition_plot, f"composition of the {len(chosen)} selected examples")
cut = float(chosen["score"].min()) if len(chosen) else None
plot_scores(scores, out.scores_plot, "influence scores of the candidates", cut)
