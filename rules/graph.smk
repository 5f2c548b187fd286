rule graph_run:
    input:
        train=unit_train_slices,
        val=f"{SLICES}/val",
        manifest=MANIFEST,
        model_files=MODEL_FILES,
    output:
        curve="results/graph/{method}/runs/{unit}.parquet",
    log:
        "logs/graph_run/{method}/{unit}.log",
    benchmark:
        "benchmarks/graph_run/{method}/{unit}.tsv"
    wildcard_constraints:
        method="brute_force|linear",
    conda:
        "../envs/skillmix.yaml"
    threads: res("graph_run", "threads")
    resources:
        mem_mb=res("graph_run", "mem_mb"),
        runtime=res("graph_run", "runtime"),
        gpu=res("graph_run", "gpu"),
    params:
        unit="{unit}",
        source=config["source"],
        model=config["model"],
        runs=GRAPH_RUNS,
        eval=config["eval"],
        stamp=GRAPH_RUN_STAMP,
        code=script_code("graph_run.py"),
    script:
        "../workflow/scripts/graph_run.py"


# graph.runs.units_per_job above 1: several units a job, in the units' order, each unit's curve
# in the batch's folder (the same curve as graph_run's)
rule graph_run_batch:
    input:
        train=batch_train_slices,
        val=f"{SLICES}/val",
        manifest=MANIFEST,
        model_files=MODEL_FILES,
    output:
        curves=directory("results/graph/{method}/batches/{batch}"),
    log:
        "logs/graph_run/{method}/batch-{batch}.log",
    benchmark:
        "benchmarks/graph_run/{method}/batch-{batch}.tsv"
    wildcard_constraints:
        method="brute_force|linear",
        batch="[0-9]+-of-[0-9]+",
    conda:
        "../envs/skillmix.yaml"
    threads: res("graph_run", "threads")
    resources:
        mem_mb=res("graph_run", "mem_mb"),
        runtime=res("graph_run", "runtime"),
        gpu=res("graph_run", "gpu"),
    params:
        units=batch_units,
        source=config["source"],
        model=config["model"],
        runs=GRAPH_RUNS,
        eval=config["eval"],
        stamp=GRAPH_RUN_STAMP,
        code=script_code("graph_run.py"),
    script:
        "../workflow/scripts/graph_run.py"


rule graph_assemble:
    input:
        curves=graph_curves,
        manifest=MANIFEST,
    output:
        **graph_report_outputs("results/graph/{method}"),
    log:
        "logs/graph_assemble/{method}.log",
    benchmark:
        "benchmarks/graph_assemble/{method}.tsv"
    wildcard_constraints:
        method="brute_force|linear",
    conda:
        "../envs/skillmix.yaml"
    threads: res("graph_assemble", "threads")
    resources:
        mem_mb=res("graph_assemble", "mem_mb"),
        runtime=res("graph_assemble", "runtime"),
        gpu=res("graph_assemble", "gpu"),
    params:
        method="{method}",
        curves=graph_curve_files,
        options=config["graph"]["assemble"],
        expect=GRAPH_RUN_STAMP,
        code=script_code("graph_assemble.py"),
    script:
        "../workflow/scripts/graph_assemble.py"


rule graph_gradient:
    input:
        train=split_slices("train"),
        val=split_slices("val"),
        manifest=MANIFEST,
        models=gradient_graph_models,
        model_files=MODEL_FILES,
    output:
        **graph_report_outputs("results/graph/{method}"),
    log:
        "logs/graph_assemble/{method}.log",
    benchmark:
        "benchmarks/graph_assemble/{method}.tsv"
    wildcard_constraints:
        method="gradient",
    conda:
        "../envs/skillmix.yaml"
    threads: res("graph_run", "threads")
    resources:
        mem_mb=res("graph_run", "mem_mb"),
        runtime=res("graph_run", "runtime"),
        gpu=res("graph_run", "gpu"),
    params:
        model=config["model"],
        gradient=config["graph"]["gradient"],
        assemble=config["graph"]["assemble"],
        val_examples=config["graph"]["runs"]["eval_examples"],
        runs_lr=config["graph"]["runs"]["lr"],
        code=script_code("graph_gradient.py"),
    script:
        "../workflow/scripts/graph_gradient.py"


rule graph_given:
    input:
        unpack(given_graph_files),
        manifest=MANIFEST,
    output:
        **graph_report_outputs("results/graph/{method}"),
    log:
        "logs/graph_assemble/{method}.log",
    benchmark:
        "benchmarks/graph_assemble/{method}.tsv"
    wildcard_constraints:
        method="given",
    conda:
        "../envs/skillmix.yaml"
    threads: res("graph_assemble", "threads")
    resources:
        mem_mb=res("graph_assemble", "mem_mb"),
        runtime=res("graph_assemble", "runtime"),
        gpu=res("graph_assemble", "gpu"),
    params:
        given=config["graph"]["given"],
        code=script_code("graph_given.py"),
    script:
        "../workflow/scripts/graph_given.py"
