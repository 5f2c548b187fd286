# DoReMi's stage: a proxy model trained with Group DRO against a reference run (the `random` run by
# default, reused); its averaged domain weights are the mixture of the `doremi` training run.


rule doremi_proxy:
    input:
        train=split_slices("train"),
        val=split_slices("val"),
        manifest=MANIFEST,
        model_files=MODEL_FILES,
        reference=f"results/train/{config['doremi']['reference']}/model",
        reference_steps=f"results/train/{config['doremi']['reference']}/steps.parquet",
    output:
        weights="results/doremi/weights.json",
        trajectory="results/doremi/trajectory.parquet",
        proxy_steps="results/doremi/proxy_steps.parquet",
        metrics="results/doremi/job_metrics.json",
    log:
        "logs/doremi/proxy.log",
    benchmark:
        "benchmarks/doremi/proxy.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("doremi_proxy", "threads")
    resources:
        mem_mb=res("doremi_proxy", "mem_mb"),
        runtime=res("doremi_proxy", "runtime"),
        gpu=res("doremi_proxy", "gpu"),
        processes=res("doremi_proxy", "processes"),
    params:
        source=config["source"],
        model=config["model"],
        train=run_settings(),
        doremi=config["doremi"],
        eval=config["eval"],
        resume=results_path("resume/doremi/proxy"),
        stamp=DOREMI_PROXY_STAMP,
        reference_stamp=train_stamp(config["doremi"]["reference"]),
        code=script_code("doremi_proxy.py"),
    script:
        "../workflow/scripts/doremi_proxy.py"
