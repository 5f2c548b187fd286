# Helpers of the skills-graph stage (rules/graph.smk).

GRAPH_RUN_STAMP = stamp(
    "graph_run.py",
    source=config["source"],
    model=config["model"],
    **{"graph.runs": config["graph"]["runs"]},
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


def graph_curves(wildcards):
    """Input function of graph assembly: the curve of every run the method needs."""
    slugs = [s["slug"] for s in manifest()["skills"]]
    return [
        f"results/graph/{wildcards.method}/runs/{unit}.parquet"
        for unit in graph_units(wildcards.method, slugs)
    ]


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
