rule evaluate:
    input:
        model="results/train/{run}/model",
        val_curve="results/train/{run}/val_curve.parquet",
        steps="results/train/{run}/steps.parquet",
        test=split_slices("test"),
        manifest=MANIFEST,
    output:
        metrics="results/eval/{run}/metrics.parquet",
        plot="results/eval/{run}/curves.png",
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
        code=code_version("modeling", "encoding", "evaluation", "plotting"),
    script:
        "../workflow/scripts/evaluate.py"
