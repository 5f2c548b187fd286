rule evaluate:
    input:
        model="results/train/{run}/model",
        val_curve="results/train/{run}/val_curve.parquet",
        steps="results/train/{run}/steps.parquet",
        mixture="results/train/{run}/mixture.parquet",
        test=split_slices("test"),
        manifest=MANIFEST,
    output:
        metrics="results/eval/{run}/metrics.parquet",
        plot=report(
            "results/eval/{run}/curves.png",
            caption="../workflow/report/curves.rst",
            category="Training",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "curves"},
        ),
        mixture_plot=report(
            "results/eval/{run}/mixture.png",
            caption="../workflow/report/mixture.rst",
            category="Training",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "mixture"},
        ),
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    params:
        run="{run}",
        model=config["model"],
        eval=config["eval"],
        stamp=EVALUATE_STAMP,
        code=script_code("evaluate.py"),
    script:
        "../workflow/scripts/evaluate.py"


rule compare:
    input:
        unpack(stage_metrics_inputs),
        metrics=expand("results/eval/{run}/metrics.parquet", run=RUNS),
        mixture=expand("results/train/{run}/mixture.parquet", run=RUNS),
        skill_counts=expand("results/train/{run}/skill_counts.parquet", run=RUNS),
        job_metrics=expand("results/train/{run}/job_metrics.json", run=RUNS),
        manifest=MANIFEST,
    output:
        summary="results/eval/summary.parquet",
        costs="results/eval/costs.parquet",
        weights="results/eval/weights.parquet",
        weights_plot=report(
            "results/eval/weights.png",
            caption="../workflow/report/weights.rst",
            category="Training",
            labels={"figure": "mixtures of the strategies"},
        ),
        plot=report(
            "results/eval/comparison.png",
            caption="../workflow/report/comparison.rst",
            category="Training",
            labels={"figure": "comparison of strategies"},
        ),
    log:
        "logs/compare/compare.log",
    benchmark:
        "benchmarks/compare/compare.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        runs=RUNS,
        stage_metrics={run: f"stage_{run}" for run in STAGE_METRICS if run in RUNS},
        graph=config["graph"],
        expect=metrics_stamps(),
        code=script_code("compare.py"),
    script:
        "../workflow/scripts/compare.py"
