"""The gradient skills graph: inner products of mean skill gradients at existing checkpoints."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.graph.gradient import gradient_graph_from_files  # noqa: E402

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

p = snakemake.params
gradient_graph_from_files(
    p.model,
    p.gradient,
    p.assemble,
    p.val_examples,
    p.runs_lr,
    snakemake.input.manifest,
    snakemake.input.train,
    snakemake.input.val,
    snakemake.output.adjacency,
    # the rule's models are the trained checkpoints, in config order
    dict(zip([n for n in p.gradient["checkpoints"] if n != "initial"], snakemake.input.models, strict=True)),
)
