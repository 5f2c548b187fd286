rule train:
    input:
        unpack(train_inputs),
    output:
        model=directory("results/train/{run}/model"),
        steps="results/train/{run}/steps.parquet",
        skill_counts="results/train/{run}/skill_counts.parquet",
        val_curve="results/train/{run}/val_curve.parquet",
        mixture="results/train/{run}/mixture.parquet",
        metrics="results/train/{run}/job_metrics.json",
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
        processes=res("train", "processes"),
    params:
        strategy="{run}",
        source=config["source"],
        model=config["model"],
        train=run_settings(),
        strategy_settings=strategy_settings,
        eval=config["eval"],
        resume=results_path("resume/train/{run}"),
        stamp=train_stamp_param,
        code=train_code_param,
    script:
        "../workflow/scripts/train.py"
