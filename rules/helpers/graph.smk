# Helpers of the skills-graph stage (rules/graph.smk).

UNITS_PER_JOB = config["graph"]["runs"]["units_per_job"]
"""Graph units one graph_run job trains (1: a job per unit, graph_run; more: graph_run_batch)."""

GRAPH_RUNS = {k: v for k, v in config["graph"]["runs"].items() if k != "units_per_job"}
"""The settings of a graph run: `graph.runs` without the batching, which changes no curve."""

GRAPH_RUN_STAMP = stamp(
    "graph_run.py",
    source=config["source"],
    model=config["model"],
    **{"graph.runs": GRAPH_RUNS},
    eval=config["eval"],
)


def graph_dir():
    """Where the skills graph of the configured method is assembled."""
    return f"results/graph/{config['graph']['method']}"


def graph_report_outputs(folder):
    """The files of an assembled skills graph as rule outputs, the heatmap in the report."""
    outputs = graph_outputs(folder)
    outputs["heatmap"] = report(
        outputs["heatmap"],
        caption="../workflow/report/heatmap.rst",
        category="Skills graph",
        labels={"method": "{method}"},
    )
    return outputs


def graph_outputs(folder):
    """The files of an assembled skills graph."""
    return {
        "adjacency": f"{folder}/adjacency.npy",
        "skills": f"{folder}/skills.json",
        "raw": f"{folder}/raw.parquet",
        "heatmap": f"{folder}/heatmap.png",
        "info": f"{folder}/graph.json",
    }


def unit_train_slices(wildcards):
    """Input function of a graph run: the training slices of the unit's one or two skills."""
    manifest()  # waits for the slice checkpoint
    return [f"{SLICES}/train/{slug}.parquet" for slug in unit_slugs(wildcards.unit)]


def graph_batches(method):
    """The method's units in jobs of graph.runs.units_per_job, in the units' order: batch name
    (`i-of-n`) -> its units. Depends on the config and the manifest alone."""
    units = graph_units(method, [s["slug"] for s in manifest()["skills"]])
    chunks = [units[i : i + UNITS_PER_JOB] for i in range(0, len(units), UNITS_PER_JOB)]
    return {f"{i + 1}-of-{len(chunks)}": chunk for i, chunk in enumerate(chunks)}


def graph_curves(wildcards):
    """Input function of graph assembly: the curve of every run the method needs, or with
    graph.runs.units_per_job above 1 the folders of the batches that hold them."""
    if UNITS_PER_JOB > 1:
        return [
            f"results/graph/{wildcards.method}/batches/{batch}"
            for batch in graph_batches(wildcards.method)
        ]
    return graph_curve_files(wildcards)


def graph_curve_files(wildcards):
    """Param function of graph assembly: the curve file of every unit, in the units' order."""
    if UNITS_PER_JOB > 1:
        return [
            f"results/graph/{wildcards.method}/batches/{batch}/{unit}.parquet"
            for batch, units in graph_batches(wildcards.method).items()
            for unit in units
        ]
    slugs = [s["slug"] for s in manifest()["skills"]]
    return [
        f"results/graph/{wildcards.method}/runs/{unit}.parquet"
        for unit in graph_units(wildcards.method, slugs)
    ]


def batch_units(wildcards):
    """Param function of a batched graph run: its units."""
    batches = graph_batches(wildcards.method)
    if wildcards.batch not in batches:
        raise ValueError(
            f"graph batch {wildcards.batch}: the batches are {list(batches)}"
        )
    return batches[wildcards.batch]


def batch_train_slices(wildcards):
    """Input function of a batched graph run: the training slices of its units' skills."""
    slugs = dict.fromkeys(
        slug for unit in batch_units(wildcards) for slug in unit_slugs(unit)
    )
    return [f"{SLICES}/train/{slug}.parquet" for slug in slugs]


def given_graph_files(wildcards):
    """Input function of a given graph: its matrix and, if named, its skills file."""
    given = config["graph"]["given"]
    if not given.get("adjacency"):
        raise ValueError(
            "graph.method is given but graph.given.adjacency names no file"
        )
    files = {"given_adjacency": local(given["adjacency"])}
    if given.get("skills"):
        files["given_skills"] = local(given["skills"])
    return files


# The gradient skills graph (graph.method: gradient) reads existing checkpoints only (the schema
# refuses strategies that need the graph themselves).
GRADIENT_CHECKPOINTS = config["graph"]["gradient"]["checkpoints"]


def gradient_graph_models(wildcards):
    """Input function of the gradient graph: the trained models among its checkpoints."""
    return [
        f"results/train/{name}/model"
        for name in GRADIENT_CHECKPOINTS
        if name != "initial"
    ]
