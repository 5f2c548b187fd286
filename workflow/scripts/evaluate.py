"""Evaluate a trained run on the test slices; write its metrics table and curves plot."""

import gc

gc.disable()  # the imports make millions of objects and no garbage: no collections over them

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.mixing.comparison import evaluate_run  # noqa: E402

gc.freeze()  # what the imports made is never collected: later collections skip it
gc.enable()

evaluate_run(
    run=snakemake.params.run,
    model_dir=snakemake.input.model,
    model_cfg=snakemake.params.model,
    eval_cfg=snakemake.params.eval,
    manifest_path=snakemake.input.manifest,
    test_paths=snakemake.input.test,
    val_curve_path=snakemake.input.val_curve,
    steps_path=snakemake.input.steps,
    metrics_path=snakemake.output.metrics,
    plot_path=snakemake.output.plot,
    mixture_path=snakemake.input.mixture,
    mixture_plot_path=snakemake.output.mixture_plot,
    stamp=snakemake.params.stamp,
)
