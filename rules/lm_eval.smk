rule lm_eval:
    input:
        model=lm_eval_model,
        tasks=LM_EVAL_TASK_FILES,
    output:
        results="results/lm_eval/{model}/results.json",
        table="results/lm_eval/{model}/results.parquet",
    log:
        "logs/lm_eval/{model}.log",
    benchmark:
        "benchmarks/lm_eval/{model}.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("lm_eval", "threads")
    resources:
        mem_mb=res("lm_eval", "mem_mb"),
        runtime=res("lm_eval", "runtime"),
        gpu=res("lm_eval", "gpu"),
    params:
        name="{model}",
        lm_eval=LM_EVAL,
        model=config["model"],
        code=script_code("lm_eval.py"),
    script:
        "../workflow/scripts/lm_eval.py"


rule lm_eval_summary:
    input:
        expand("results/lm_eval/{model}/results.parquet", model=LM_EVAL["models"]),
    output:
        summary="results/lm_eval/summary.parquet",
    log:
        "logs/lm_eval/summary.log",
    benchmark:
        "benchmarks/lm_eval/summary.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        code=script_code("lm_eval_summary.py"),
    script:
        "../workflow/scripts/lm_eval_summary.py"
