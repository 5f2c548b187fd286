"""Evaluate a trained run on the test slices; write its metrics table and curves plot."""

from skillmix.infra.warm import run_workflow_job

run_workflow_job(
    snakemake,
    "skillmix.mixing.comparison:evaluate_run",
    dict(
        run=snakemake.params.run,
        model_dir=snakemake.input.model,
        model_cfg=snakemake.params.model,
        eval_cfg=snakemake.params.eval,
        manifest_path=snakemake.input.manifest,
        test_paths=list(snakemake.input.test),
        val_curve_path=snakemake.input.val_curve,
        steps_path=snakemake.input.steps,
        metrics_path=snakemake.output.metrics,
        plot_path=snakemake.output.plot,
        mixture_path=snakemake.input.mixture,
        mixture_plot_path=snakemake.output.mixture_plot,
        stamp=snakemake.params.stamp,
    ),
)
