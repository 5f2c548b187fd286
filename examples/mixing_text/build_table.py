"""Build the real-text mixing table (issue 28, item 4c) from ../shared/data, outside the repository.

Groups (the `skill` column): the eight Natural-Instructions categories of `ni_task_subset`,
GSM8K (train) and SST-2 (train). BBH is never read (its canary asks not to train on it).
Every group keeps round(`--fraction` × its full size) examples, at least `--floor` (or all of a
group that has fewer), drawn at random with `--seed`, so the groups stay as unequal as the real
data: the natural mixture (skillmix's `random` strategy: proportional to the training slices)
follows the real sizes, except that the floor lifts the smallest group.

Rows (columns `skill`, `prompt`, `answer`, `id`; the engine trains on `prompt + " " + answer`
with the loss on the answer; prompts are cut from the left to fit `model.max_length`):

- NI: prompt `Input: <instance input>\\nOutput:`, answer its first output (the task definition
  is left out: 200–1,200 characters, it would not fit the tiny model's window);
- GSM8K: prompt `Question: <question>\\nAnswer:`, answer the worked solution's last step and its
  final line (`… = $10.\\n#### 10`), calculator annotations `<<…>>` removed (`--gsm8k-answer
  solution` keeps the whole solution);
- SST-2: prompt `Sentence: <sentence>\\nSentiment:`, answer `positive` or `negative`.

An example whose answer is longer than `--max-answer` characters (80) is left out (SCAN's longer
action sequences, GSM8K's longer last steps: 62% of them fit), so that the byte-level model's
window keeps the whole answer and greedy decoding in every evaluation stays short. The full size
used for the fraction is the group's size before this filter.

    python examples/mixing_text/build_table.py --out /tmp/mixing_text   # writes table.jsonl, sizes.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = Path(os.environ.get("SKILLMIX_SHARED_DATA", REPO.parent / "shared" / "data"))


def _ni_groups(shared: Path) -> dict[str, tuple[int, list[tuple[str, str, str]]]]:
    """Category → (full size, rows (id, prompt, answer))."""
    folder = shared / "ni_task_subset"
    groups: dict[str, tuple[int, list[tuple[str, str, str]]]] = {}
    with open(folder / "task_categories.csv", encoding="utf-8") as handle:
        for entry in csv.DictReader(handle):
            path = folder / "tasks" / entry["task_file"]
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                task = json.load(f)
            rows = [
                (
                    f"{entry['task']}-{i}",
                    f"Input: {inst['input'].strip()}\nOutput:",
                    inst["output"][0].strip(),
                )
                for i, inst in enumerate(task["Instances"])
                if inst["output"] and inst["output"][0].strip()
            ]
            size, old = groups.get(entry["ni_category"], (0, []))
            groups[entry["ni_category"]] = (size + len(task["Instances"]), old + rows)
    return groups


def _gsm8k_answer(solution: str, form: str) -> str:
    lines = [line.strip() for line in re.sub(r"<<[^>]*>>", "", solution).strip().split("\n") if line.strip()]
    return "\n".join(lines if form == "solution" else lines[-2:])


def _gsm8k(shared: Path, form: str) -> tuple[int, list[tuple[str, str, str]]]:
    with gzip.open(shared / "gsm8k" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    rows = [
        (f"gsm8k-{i}", f"Question: {x['question'].strip()}\nAnswer:", _gsm8k_answer(x["answer"], form))
        for i, x in enumerate(items)
    ]
    return len(items), rows


def _sst2(shared: Path) -> tuple[int, list[tuple[str, str, str]]]:
    rows = []
    with open(shared / "sst2" / "train.tsv", encoding="utf-8") as f:
        next(f)  # header: label \t sentence
        for i, line in enumerate(f):
            label, sentence = line.rstrip("\n").split("\t")[:2]
            rows.append(
                (
                    f"sst2-{i}",
                    f"Sentence: {sentence.strip()}\nSentiment:",
                    "positive" if label == "1" else "negative",
                )
            )
    return len(rows), rows


def build(
    shared: Path, out: Path, fraction: float, floor: int, max_answer: int, seed: int, gsm8k_answer: str
) -> dict:
    groups = _ni_groups(shared)
    groups["gsm8k"] = _gsm8k(shared, gsm8k_answer)
    groups["sst2"] = _sst2(shared)
    rng = np.random.default_rng(seed)
    table, sizes = [], {}
    for name in sorted(groups):
        full, rows = groups[name]
        fits = [r for r in rows if len(r[2]) <= max_answer]
        want = min(len(fits), max(floor, round(fraction * full)))
        keep = sorted(rng.choice(len(fits), size=want, replace=False))
        table += [{"id": fits[i][0], "skill": name, "prompt": fits[i][1], "answer": fits[i][2]} for i in keep]
        sizes[name] = {"full": full, "answer_fits": len(fits), "kept": want}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table.jsonl", "w", encoding="utf-8") as f:
        for row in table:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    total = sum(s["kept"] for s in sizes.values())
    for s in sizes.values():
        s["share"] = round(s["kept"] / total, 4)
    meta = {
        "fraction": fraction,
        "floor": floor,
        "max_answer": max_answer,
        "gsm8k_answer": gsm8k_answer,
        "seed": seed,
        "rows": total,
        "groups": sizes,
    }
    (out / "sizes.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder")
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/mixing_text"), help="a folder outside the repository"
    )
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--floor", type=int, default=200)
    parser.add_argument("--max-answer", type=int, default=80)
    parser.add_argument("--gsm8k-answer", choices=["final_step", "solution"], default="final_step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        parser.error(
            f"--out {out} is inside the repository; write the table elsewhere (e.g. /tmp/mixing_text)"
        )
    meta = build(
        args.shared.resolve(), out, args.fraction, args.floor, args.max_answer, args.seed, args.gsm8k_answer
    )
    print(json.dumps(meta, indent=1))
    print(f"wrote {out / 'table.jsonl'}")


if __name__ == "__main__":
    main()
