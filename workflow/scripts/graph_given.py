"""Check a given skills graph against the data's skills and store it in the workflow's format."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.given import given_from_files

given = snakemake.params.given
given_from_files(
    snakemake.input.given_adjacency,
    snakemake.input.get("given_skills"),
    snakemake.input.manifest,
    given.get("rows"),
    given.get("columns"),
    snakemake.output.adjacency,
)
