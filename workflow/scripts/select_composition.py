"""Every selection's composition per skill and per answer, and the influence scores' distribution."""

import pandas as pd

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.jobs import write_parquet  # noqa: E402
from skillmix.plotting import plot_composition, plot_scores  # noqa: E402
from skillmix.selection.selected import answer_composition, composition  # noqa: E402

out = snakemake.output
pool = pd.read_parquet(snakemake.input.pool)
target = pd.read_parquet(snakemake.input.target)
scores = pd.read_parquet(snakemake.input.scores)
selections = {
    name: pd.read_parquet(path)
    for name, path in zip(snakemake.params.selections, snakemake.input.selected, strict=True)
}
table = composition(pool, selections)
answers = answer_composition(pool, {"target": target, **selections})
log.info("composition of the selections:\n%s", table.to_string(index=False))
log.info("answers of the pool, the target and the selections:\n%s", answers.to_string(index=False))
write_parquet(table, out.composition)
write_parquet(answers, out.answers)
size = max(len(s) for s in selections.values())
plot_composition(table, out.composition_plot, f"composition of the {size} selected examples")
# the lowest score a scoring method took: where its selection cuts the distribution
scored = [s["score"] for s in selections.values() if "score" in s and len(s)]
cut = float(min(scored[0])) if scored else None
plot_scores(scores, out.scores_plot, "influence scores of the candidates", cut)
