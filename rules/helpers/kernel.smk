# Helpers of the eNTK stage (rules/kernel.smk).
KERNEL = config["kernel"]
KER = "results/kernel"
# what the task table depends on (not the formulas or solvers)
KERNEL_TASK = {
    k: KERNEL[k]
    for k in ("skills", "label_split", "label_words", "k_shot", "seed", "max_eval")
}


# what every kernel feature shard is made with
KERNEL_FEATURES_STAMP = stamp(
    "kernel_features.py",
    model=config["model"],
    base_run=KERNEL["base_run"],
    **{
        f"kernel.{k}": KERNEL[k] for k in ("formulas", "subset", "binary", "projection")
    },
)
