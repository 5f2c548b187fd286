"""RDS+: the pooled final hidden states of the candidate pool or of the target set."""

from skillmix.infra.inputs import based_on
from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.selection.rds import hidden_states_job  # noqa: E402

p, out = snakemake.params, snakemake.output
hidden_states_job(
    snakemake.input.examples,
    out.states,
    out.index,
    out.info,
    what=p.what,
    model_cfg=based_on(p.model, snakemake.input.base),
    rds_cfg=p.rds,
    stamp=p.stamp,
)
