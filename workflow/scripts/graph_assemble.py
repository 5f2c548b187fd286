"""Assemble the skills graph of a method from the curves of its runs."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.learned import assemble_from_files
from skillmix.infra.stamps import check_stamps

# the curve of every unit (the inputs, or in the batches' folders the inputs are); every run made
# with the settings the config gives now (not left from an interrupted run)
curves = list(snakemake.params.curves)
check_stamps({curve: snakemake.params.expect for curve in curves}, "graph runs")

assemble_from_files(
    snakemake.params.method,
    curves,
    snakemake.input.manifest,
    snakemake.params.options,
    snakemake.output.adjacency,
)
