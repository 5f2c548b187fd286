"""How many steps a tiny Llama needs to learn Skill-It's Addition digits (issue 28, item 4b pilot).

A plain PyTorch loop, outside the workflow, on fresh operands every step (no fixed training set):
a tiny `LlamaForCausalLM` over Addition's 17 words reads `Input: A = a2 a1 a0 + b2 b1 b0 , A d = ?
Output:` and is trained on the next token only (the digit), AdamW, linear warm-up of 30 steps and
linear decay, gradient clipping 1.0, batch 32. Prints, eight times during the run, the step, the
validation loss and accuracy on 600 fixed examples of the chosen digits, and the seconds so far.

    python bench/addition_pilot.py --hidden 128 --layers 2 --lr 1e-3 --weight-decay 0.1 \\
        --steps 3000 --digits 0
    python bench/addition_pilot.py --hidden 64 --layers 2 --lr 3e-3 --steps 3000 --digits 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

WORDS = ["<pad>", "<eos>", "<unk>", "Input:", "A", "=", "+", ",", "?", "Output:", *map(str, range(10))]
INDEX = {w: i for i, w in enumerate(WORDS)}


def batch(rng: np.random.Generator, n: int, digits: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` prompts of 3-digit operands asking for one of `digits` of the sum, and that digit's id."""
    a, b, d = rng.integers(0, 1000, n), rng.integers(0, 1000, n), rng.choice(digits, n)
    ids, answers = [], []
    for x, y, k in zip(a, b, d, strict=True):
        words = f"Input: A = {' '.join(f'{x:03d}')} + {' '.join(f'{y:03d}')} , A {k} = ? Output:"
        ids.append([INDEX[w] for w in words.split()])
        answers.append(INDEX[str((x + y) // 10**k % 10)])
    return torch.tensor(ids), torch.tensor(answers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--digits", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    config = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    ramp = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * max(0.0, 1 - s / args.steps)
    )
    val_x, val_y = batch(rng, 600, args.digits)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step % max(1, args.steps // 8) == 0:
            with torch.no_grad():
                logits = model(val_x).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits, val_y).item()
            acc = (logits.argmax(-1) == val_y).float().mean().item()
            print(
                f"step {step}: val loss {loss:.3f}, accuracy {acc:.3f}, {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        x, y = batch(rng, 32, args.digits)
        loss = torch.nn.functional.cross_entropy(model(x).logits[:, -1], y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ramp.step()


if __name__ == "__main__":
    main()
