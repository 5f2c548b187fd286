# RegMix's stage: proxy mixtures sampled around the natural one, one short proxy run each (a job
# each, so a cluster runs them at once), a regression from mixture to loss and the mixture it
# predicts best: the mixture of the `regmix` training run.


rule regmix_mixtures:
    input:
        manifest=MANIFEST,
    output:
        mixtures="results/regmix/mixtures.parquet",
    log:
        "logs/regmix/mixtures.log",
    benchmark:
        "benchmarks/regmix/mixtures.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("regmix_mixtures", "threads")
    resources:
        mem_mb=res("regmix_mixtures", "mem_mb"),
        runtime=res("regmix_mixtures", "runtime"),
        gpu=res("regmix_mixtures", "gpu"),
    params:
        regmix=REGMIX,
        train=run_settings(),
        code=script_code("regmix_mixtures.py"),
    script:
        "../workflow/scripts/regmix_mixtures.py"


rule regmix_proxy:
    input:
        train=split_slices("train"),
        val=split_slices("val"),
        manifest=MANIFEST,
        model_files=MODEL_FILES,
        mixtures="results/regmix/mixtures.parquet",
    output:
        curve="results/regmix/runs/{n}.parquet",
        metrics="results/regmix/runs/{n}.json",
    log:
        "logs/regmix/runs/{n}.log",
    benchmark:
        "benchmarks/regmix/runs/{n}.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("regmix_proxy", "threads")
    resources:
        mem_mb=res("regmix_proxy", "mem_mb"),
        runtime=res("regmix_proxy", "runtime"),
        gpu=res("regmix_proxy", "gpu"),
    params:
        run="{n}",
        source=config["source"],
        model=config["model"],
        train=run_settings(),
        regmix=REGMIX,
        eval=config["eval"],
        stamp=REGMIX_PROXY_STAMP,
        code=script_code("regmix_proxy.py"),
    script:
        "../workflow/scripts/regmix_proxy.py"


rule regmix_fit:
    input:
        unpack(regmix_fit_inputs),
        manifest=MANIFEST,
    output:
        mixture="results/regmix/mixture.json",
        fit="results/regmix/fit.parquet",
    log:
        "logs/regmix/fit.log",
    benchmark:
        "benchmarks/regmix/fit.tsv"
    conda:
        "../envs/skillmix.yaml"
    threads: res("regmix_fit", "threads")
    resources:
        mem_mb=res("regmix_fit", "mem_mb"),
        runtime=res("regmix_fit", "runtime"),
        gpu=res("regmix_fit", "gpu"),
    params:
        regmix=REGMIX,
        train=run_settings(),
        expect=REGMIX_PROXY_STAMP,
        code=script_code("regmix_fit.py"),
    script:
        "../workflow/scripts/regmix_fit.py"
