# Helpers of the mixers' own stages (rules/doremi.smk, rules/regmix.smk): the mixture file each
# writes for its main run, and the stamps of their proxy runs.

MIXTURE_FILES = {
    "doremi": "results/doremi/weights.json",
    "regmix": "results/regmix/mixture.json",
}
"""The mixture file of each strategy whose stage writes its mixture (registry need mixture_file)."""

DOREMI_PROXY_STAMP = stamp(
    "doremi_proxy.py",
    source=config["source"],
    model=config["model"],
    train=run_settings(),
    doremi=config["doremi"],
    eval=config["eval"],
)
REGMIX = config["regmix"]
REGMIX_PROXY_STAMP = stamp(
    "regmix_proxy.py",
    source=config["source"],
    model=config["model"],
    train=run_settings(),
    **{"regmix.proxy": REGMIX["proxy"], "regmix.sample": REGMIX["sample"]},
    eval=config["eval"],
)


def mixture_input(run):
    """The mixture file a run's strategy trains on (none for the others)."""
    if "mixture_file" not in registry.STRATEGIES[run].needs:
        return {}
    return {"mixture": MIXTURE_FILES[run]}


def regmix_fit_inputs(wildcards):
    """Input function of RegMix's fit: the sampled mixtures and every proxy run's curve, or the
    table of proxy runs made elsewhere (regmix.proxy_runs)."""
    if REGMIX["proxy_runs"]:
        return {"table": local(REGMIX["proxy_runs"])}
    return {
        "mixtures": "results/regmix/mixtures.parquet",
        "runs": expand("results/regmix/runs/{n}.parquet", n=range(REGMIX["runs"])),
    }


STAGE_METRICS = {
    "doremi": ["results/doremi/job_metrics.json"],
    "regmix": (
        []
        if REGMIX["proxy_runs"]
        else expand("results/regmix/runs/{n}.json", n=range(REGMIX["runs"]))
    ),
}
"""The job metrics of a strategy's own stage jobs (their wall time goes in the comparison's cost
table)."""


def stage_metrics_inputs(wildcards):
    """Input function of the comparison: the stage metrics of the configured runs that have them."""
    return {
        f"stage_{run}": paths for run, paths in STAGE_METRICS.items() if run in RUNS
    }
