"""lm-evaluation-harness on one trained model: its results JSON and one row per task and metric."""

from skillmix.infra.jobs import start_log

log = start_log(snakemake.log[0], snakemake.threads, snakemake.resources.gpu)

from skillmix.engine.modeling import select_runtime, weight_dtype  # noqa: E402
from skillmix.harness import results_table, run_lm_eval, write_results  # noqa: E402
from skillmix.infra.jobs import write_parquet  # noqa: E402

p = snakemake.params
cfg = p.lm_eval
runtime = select_runtime(p.model["device"], p.model["precision"])
results = run_lm_eval(
    snakemake.input.model,
    cfg["tasks"],
    include_path=cfg["include_path"],
    num_fewshot=cfg["num_fewshot"],
    limit=cfg["limit"],
    batch_size=cfg["batch_size"],
    device=str(runtime.device),
    dtype=str(weight_dtype(p.model["dtype"], str(runtime.device))).removeprefix("torch."),
    seed=cfg["seed"],
)
table = results_table(p.name, results)
log.info("lm-eval on %s:\n%s", p.name, table.to_string(index=False))
write_results(results, snakemake.output.results)
write_parquet(table, snakemake.output.table)
