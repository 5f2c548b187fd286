# The eNTK stage: a k-shot classification task from the slices, its label-word gradient features
# (scattered in shards of rows, one pass for every formula), the kernels (blocked Gram matrices of
# the gathered features), and the kernel solvers' accuracy on val and test.


rule kernel_task:
    input:
        train=split_slices("train"),
        val=split_slices("val"),
        test=split_slices("test"),
        manifest=MANIFEST,
    output:
        task=f"{KER}/task.parquet",
        words=f"{KER}/words.json",
    log:
        "logs/kernel/task.log",
    benchmark:
        "benchmarks/kernel/task.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        kernel=KERNEL_TASK,
        code=script_code("kernel_task.py"),
    script:
        "../workflow/scripts/kernel_task.py"


rule kernel_features:
    input:
        task=f"{KER}/task.parquet",
        words=f"{KER}/words.json",
        base=base_input(KERNEL["base_run"]),
        model_files=model_inputs(KERNEL["base_run"]),
    output:
        features=f"{KER}/features/{{scatteritem}}.npz",
    log:
        "logs/kernel/features/{scatteritem}.log",
    benchmark:
        "benchmarks/kernel/features/{scatteritem}.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("kernel", "threads")
    resources:
        mem_mb=res("kernel", "mem_mb"),
        runtime=res("kernel", "runtime"),
        gpu=res("kernel", "gpu"),
    params:
        model=config["model"],
        formulas=KERNEL["formulas"],
        subset=KERNEL["subset"],
        binary=KERNEL["binary"],
        projection=KERNEL["projection"],
        shard="{scatteritem}",
        stamp=KERNEL_FEATURES_STAMP,
        code=script_code("kernel_features.py"),
    script:
        "../workflow/scripts/kernel_features.py"


rule kernel:
    input:
        task=f"{KER}/task.parquet",
        words=f"{KER}/words.json",
        features=gather.kernel(f"{KER}/features/{{scatteritem}}.npz"),
    output:
        kernels=expand(f"{KER}/{{formula}}/kernels.npz", formula=KERNEL["formulas"]),
    log:
        "logs/kernel/kernel.log",
    benchmark:
        "benchmarks/kernel/kernel.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("kernel_solve", "threads")
    resources:
        mem_mb=res("kernel_solve", "mem_mb"),
        runtime=res("kernel_solve", "runtime"),
        gpu=res("kernel_solve", "gpu"),
    params:
        formulas=KERNEL["formulas"],
        row_block=KERNEL["row_block"],
        col_block=KERNEL["col_block"],
        expect=KERNEL_FEATURES_STAMP,
        code=script_code("kernel.py"),
    script:
        "../workflow/scripts/kernel.py"


rule kernel_finetune:
    input:
        task=f"{KER}/task.parquet",
        words=f"{KER}/words.json",
        base=base_input(KERNEL["base_run"]),
        model_files=model_inputs(KERNEL["base_run"]),
    output:
        metrics=f"{KER}/finetune/{{optimizer}}.parquet",
        steps=f"{KER}/finetune/{{optimizer}}_steps.parquet",
    log:
        "logs/kernel/finetune_{optimizer}.log",
    benchmark:
        "benchmarks/kernel/finetune_{optimizer}.tsv"
    wildcard_constraints:
        optimizer="sgd|adam",
    conda:
        "../envs/skillmix.yaml"
    threads: res("kernel", "threads")
    resources:
        mem_mb=res("kernel", "mem_mb"),
        runtime=res("kernel", "runtime"),
        gpu=res("kernel", "gpu"),
    params:
        model=config["model"],
        optimizer="{optimizer}",
        finetune=KERNEL["finetune"],
        subset=KERNEL["subset"],
        code=script_code("kernel_finetune.py"),
    script:
        "../workflow/scripts/kernel_finetune.py"


rule kernel_solve:
    input:
        kernels=expand(f"{KER}/{{formula}}/kernels.npz", formula=KERNEL["formulas"]),
        finetune=expand(
            f"{KER}/finetune/{{optimizer}}.parquet",
            optimizer=KERNEL["finetune"]["optimizers"],
        ),
    output:
        table=f"{KER}/solutions.parquet",
        comparison=f"{KER}/comparison.parquet",
        plot=report(
            f"{KER}/solutions.png",
            caption="../workflow/report/kernel_plot.rst",
            category="eNTK",
            labels={"figure": "solver accuracy"},
        ),
        table_html=report(
            f"{KER}/comparison.html",
            caption="../workflow/report/kernel_table.rst",
            category="eNTK",
            labels={"figure": "solvers next to fine-tuning"},
        ),
    log:
        "logs/kernel/solve.log",
    benchmark:
        "benchmarks/kernel/solve.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("kernel_solve", "threads")
    resources:
        mem_mb=res("kernel_solve", "mem_mb"),
        runtime=res("kernel_solve", "runtime"),
        gpu=res("kernel_solve", "gpu"),
    params:
        formulas=KERNEL["formulas"],
        solvers=KERNEL["solvers"],
        reg=KERNEL["reg"],
        f0=KERNEL["f0"],
        f0_scaling=KERNEL["f0_scaling"],
        gamma=KERNEL["gamma"],
        asym_mix=KERNEL["asym_mix"],
        code=script_code("kernel_solve.py"),
    script:
        "../workflow/scripts/kernel_solve.py"
