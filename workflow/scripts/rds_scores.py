"""RDS+: each candidate's highest cosine with every target skill's examples (hidden states)."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.infra.stamps import check_stamps  # noqa: E402
from skillmix.selection.rds import scores_job  # noqa: E402

inp = snakemake.input
# both sets' states made with the settings the config gives now
check_stamps(
    {inp.candidates_index: snakemake.params.expect, inp.target_index: snakemake.params.expect},
    "hidden states",
)
table = scores_job(
    inp.pool,
    (inp.candidates, inp.candidates_index),
    (inp.target, inp.target_index),
    snakemake.output.scores,
    tasks=snakemake.params.tasks,
)
log.info("scored %d candidates against %d target skills", len(table), table.shape[1] - 3)
