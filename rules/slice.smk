checkpoint slice:
    input:
        source=SOURCE_FILES,
    output:
        manifest=MANIFEST,
        train=directory(f"{SLICES}/train"),
        val=directory(f"{SLICES}/val"),
        test=directory(f"{SLICES}/test"),
    log:
        "logs/slice/slice.log",
    benchmark:
        "benchmarks/slice/slice.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("slice", "threads")
    resources:
        mem_mb=res("slice", "mem_mb"),
        runtime=res("slice", "runtime"),
        gpu=res("slice", "gpu"),
    params:
        source=config["source"],
        split=config["split"],
        tokenizer=tokenizer_settings(),
        code=script_code("slice.py"),
    script:
        "../workflow/scripts/slice.py"
