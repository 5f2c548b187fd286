# Data selection: pool and target, LESS's LoRA warm-up, gradient datastore (scattered in shards)
# and influence, RDS+'s hidden states and similarities, each method's selection (and a random
# baseline), training on each, evaluation on the target, and what each method's stages cost.
# The selection methods come from the registry (skillmix.infra.registry): the select rule runs
# each by name (its inputs follow the method's needs), and its code version adds the method's module.


rule select_pool:
    input:
        train=split_slices("train"),
        manifest=MANIFEST,
    output:
        pool=f"{SEL}/pool.parquet",
    log:
        "logs/select/pool.log",
    benchmark:
        "benchmarks/select/pool.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        skills=SELECT["pool"]["skills"],
        code=script_code("select_pool.py"),
    script:
        "../workflow/scripts/select_pool.py"


rule select_target:
    input:
        unpack(target_inputs),
    output:
        target=f"{SEL}/target/target.parquet",
        evaluation=f"{SEL}/target/evaluation.parquet",
    log:
        "logs/select/target.log",
    benchmark:
        "benchmarks/select/target.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        target=SELECT["target"],
        code=script_code("select_target.py"),
    script:
        "../workflow/scripts/select_target.py"


rule warmup:
    input:
        pool=f"{SEL}/pool.parquet",
        base=base_input(SELECT["base_run"]),
        model_files=model_inputs(SELECT["base_run"]),
    output:
        checkpoints=[directory(f"{SEL}/warmup/{c}") for c in CHECKPOINTS],
        weights=f"{SEL}/warmup/weights.json",
        steps=f"{SEL}/warmup/steps.parquet",
        subset=f"{SEL}/warmup/subset.parquet",
    log:
        "logs/select/warmup.log",
    benchmark:
        "benchmarks/select/warmup.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("warmup", "threads")
    resources:
        mem_mb=res("warmup", "mem_mb"),
        runtime=res("warmup", "runtime"),
        gpu=res("warmup", "gpu"),
        processes=res("warmup", "processes"),
    params:
        model=config["model"],
        lora=SELECT["lora"],
        warmup=SELECT["warmup"],
        names=CHECKPOINTS,
        resume=results_path("resume/select/warmup"),
        code=script_code("warmup.py"),
    script:
        "../workflow/scripts/warmup.py"


rule grads:
    input:
        checkpoint=f"{SEL}/warmup/{{ckpt}}",
        examples=grads_examples,
        base=base_input(SELECT["base_run"]),
        model_files=model_inputs(SELECT["base_run"]),
    output:
        features=expand(
            f"{SEL}/grads/{{{{ckpt}}}}/{{{{set}}}}/d{{dim}}/{{{{scatteritem}}}}.npy",
            dim=DIMS,
        ),
        index=f"{SEL}/grads/{{ckpt}}/{{set}}/index/{{scatteritem}}.parquet",
        info=f"{SEL}/grads/{{ckpt}}/{{set}}/info/{{scatteritem}}.json",
    log:
        "logs/select/grads/{ckpt}/{set}/{scatteritem}.log",
    benchmark:
        "benchmarks/select/grads/{ckpt}/{set}/{scatteritem}.tsv"
    wildcard_constraints:
        ckpt="epoch[0-9]+",
        set="candidates|target",
    conda:
        "../envs/skillmix.yaml"
    threads: res("grads", "threads")
    resources:
        mem_mb=res("grads", "mem_mb"),
        runtime=res("grads", "runtime"),
        gpu=res("grads", "gpu"),
        processes=res("grads", "processes"),
    params:
        model=config["model"],
        lora=SELECT["lora"],
        grads=SELECT["grads"],
        feature=grads_feature,
        dims=DIMS,
        shard="{scatteritem}",
        stamp=grads_stamp_param,
        code=script_code("grads.py"),
    script:
        "../workflow/scripts/grads.py"


rule influence:
    input:
        unpack(influence_inputs),
        pool=f"{SEL}/pool.parquet",
        weights=f"{SEL}/warmup/weights.json",
    output:
        scores=f"{SEL}/influence/d{{dim}}/scores.parquet",
    log:
        "logs/select/influence/d{dim}.log",
    benchmark:
        "benchmarks/select/influence/d{dim}.tsv"
    wildcard_constraints:
        dim="[0-9]+",
    conda:
        "../envs/skillmix.yaml"
    threads: res("influence", "threads")
    resources:
        mem_mb=res("influence", "mem_mb"),
        runtime=res("influence", "runtime"),
        gpu=res("influence", "gpu"),
    params:
        checkpoints=CHECKPOINTS,
        chunk_rows=SELECT["influence"]["chunk_rows"],
        match=SELECT["influence"]["match"],
        per_example=SELECT["selection"]["balance"] == "example",
        expect={s: grads_stamp(s) for s in ("candidates", "target")},
        code=script_code("influence.py"),
    script:
        "../workflow/scripts/influence.py"


rule hidden_states:
    input:
        examples=hidden_examples,
        base=base_input(SELECT["base_run"]),
        model_files=model_inputs(SELECT["base_run"]),
    output:
        states=f"{SEL}/hidden/{{set}}/states.npy",
        index=f"{SEL}/hidden/{{set}}/index.parquet",
        info=f"{SEL}/hidden/{{set}}/info.json",
    log:
        "logs/select/hidden/{set}.log",
    benchmark:
        "benchmarks/select/hidden/{set}.tsv"
    wildcard_constraints:
        set="candidates|target",
    conda:
        "../envs/skillmix.yaml"
    threads: res("hidden_states", "threads")
    resources:
        mem_mb=res("hidden_states", "mem_mb"),
        runtime=res("hidden_states", "runtime"),
        gpu=res("hidden_states", "gpu"),
    params:
        what=lambda wildcards: (
            "candidate pool" if wildcards.set == "candidates" else "target set"
        ),
        model=config["model"],
        rds=SELECT["rds"],
        stamp=HIDDEN_STAMP,
        code=script_code("hidden_states.py"),
    script:
        "../workflow/scripts/hidden_states.py"


rule rds_scores:
    input:
        pool=f"{SEL}/pool.parquet",
        candidates=f"{SEL}/hidden/candidates/states.npy",
        candidates_index=f"{SEL}/hidden/candidates/index.parquet",
        target=f"{SEL}/hidden/target/states.npy",
        target_index=f"{SEL}/hidden/target/index.parquet",
    output:
        scores=f"{SEL}/rds/scores.parquet",
    log:
        "logs/select/rds_scores.log",
    benchmark:
        "benchmarks/select/rds_scores.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        tasks=rds_target_skills(),
        expect=HIDDEN_STAMP,
        code=script_code("rds_scores.py"),
    script:
        "../workflow/scripts/rds_scores.py"


rule select:
    input:
        unpack(selection_inputs),
        pool=f"{SEL}/pool.parquet",
    output:
        parquet=f"{SEL}/selected/{{selection}}.parquet",
        jsonl=f"{SEL}/selected/{{selection}}.jsonl",
        messages=f"{SEL}/selected/{{selection}}.messages.jsonl",
        prompt_completion=f"{SEL}/selected/{{selection}}.prompt_completion.jsonl",
    log:
        "logs/select/{selection}.log",
    benchmark:
        "benchmarks/select/{selection}.tsv"
    wildcard_constraints:
        selection=registry.pattern("selection"),
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        selection=SELECT["selection"],
        code=select_code_param,
    script:
        "../workflow/scripts/select.py"


rule select_composition:
    input:
        pool=f"{SEL}/pool.parquet",
        target=f"{SEL}/target/target.parquet",
        scores=composition_scores(),
        selected=expand(f"{SEL}/selected/{{selection}}.parquet", selection=SELECTIONS),
    output:
        composition=f"{SEL}/selected/composition.parquet",
        answers=f"{SEL}/selected/answers.parquet",
        composition_plot=report(
            f"{SEL}/selected/composition.png",
            caption="../workflow/report/composition.rst",
            category="LESS",
            labels={"figure": "composition"},
        ),
        scores_plot=report(
            f"{SEL}/selected/scores.png",
            caption="../workflow/report/scores.rst",
            category="LESS",
            labels={"figure": "influence scores"},
        ),
    log:
        "logs/select/composition.log",
    benchmark:
        "benchmarks/select/composition.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        selections=SELECTIONS,
        code=script_code("select_composition.py"),
    script:
        "../workflow/scripts/select_composition.py"


rule train_selected:
    input:
        selected=f"{SEL}/selected/{{selection}}.parquet",
        evaluation=f"{SEL}/target/evaluation.parquet",
        base=base_input(SELECT["base_run"]),
        model_files=model_inputs(SELECT["base_run"]),
    output:
        model=directory(f"{SEL}/train/{{selection}}/model"),
        steps=f"{SEL}/train/{{selection}}/steps.parquet",
        val_curve=f"{SEL}/train/{{selection}}/target_curve.parquet",
        metrics=f"{SEL}/train/{{selection}}/job_metrics.json",
    log:
        "logs/select/train/{selection}.log",
    benchmark:
        "benchmarks/select/train/{selection}.tsv"
    wildcard_constraints:
        selection=registry.pattern("selection"),
    conda:
        "../envs/skillmix.yaml"
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=res("train", "gpu"),
        processes=res("train", "processes"),
    params:
        model=config["model"],
        lora=SELECT["lora"],
        warmup=SELECT["warmup"],
        train=SELECT["train"],
        eval=config["eval"],
        resume=results_path("resume/select/train/{selection}"),
        stamp=SELECTED_TRAIN_STAMP,
        code=script_code("train_selected.py"),
    script:
        "../workflow/scripts/train_selected.py"


rule evaluate_selected:
    input:
        model=f"{SEL}/train/{{selection}}/model",
        evaluation=f"{SEL}/target/evaluation.parquet",
        val_curve=f"{SEL}/train/{{selection}}/target_curve.parquet",
        steps=f"{SEL}/train/{{selection}}/steps.parquet",
    output:
        metrics=f"{SEL}/eval/{{selection}}/metrics.parquet",
        plot=f"{SEL}/eval/{{selection}}/curves.png",
    log:
        "logs/select/evaluate/{selection}.log",
    benchmark:
        "benchmarks/select/evaluate/{selection}.tsv"
    wildcard_constraints:
        selection=registry.pattern("selection"),
    conda:
        "../envs/skillmix.yaml"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    params:
        selection="{selection}",
        model=config["model"],
        eval=config["eval"],
        stamp=SELECTED_EVALUATE_STAMP,
        code=script_code("evaluate_selected.py"),
    script:
        "../workflow/scripts/evaluate_selected.py"


rule compare_selected:
    input:
        metrics=expand(
            f"{SEL}/eval/{{selection}}/metrics.parquet", selection=SELECTIONS
        ),
    output:
        summary=f"{SEL}/eval/summary.parquet",
        plot=report(
            f"{SEL}/eval/comparison.png",
            caption="../workflow/report/less_comparison.rst",
            category="LESS",
            labels={"figure": "selections compared"},
        ),
    log:
        "logs/select/compare.log",
    benchmark:
        "benchmarks/select/compare.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        selections=SELECTIONS,
        expect={"train": SELECTED_TRAIN_STAMP, "evaluate": SELECTED_EVALUATE_STAMP},
        code=script_code("compare_selected.py"),
    script:
        "../workflow/scripts/compare_selected.py"


rule select_costs:
    input:
        unpack(cost_inputs),
    output:
        costs=f"{SEL}/eval/costs.parquet",
        table=report(
            f"{SEL}/eval/costs.html",
            caption="../workflow/report/selection_costs.rst",
            category="LESS",
            labels={"figure": "selection costs"},
        ),
    log:
        "logs/select/costs.log",
    benchmark:
        "benchmarks/select/costs.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("small", "threads")
    resources:
        mem_mb=res("small", "mem_mb"),
        runtime=res("small", "runtime"),
        gpu=res("small", "gpu"),
    params:
        selections=SELECTIONS,
        stages=cost_stages(),
        code=script_code("select_costs.py"),
    script:
        "../workflow/scripts/select_costs.py"
