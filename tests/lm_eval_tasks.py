"""lm-eval task folders for tests: a multiple-choice task on a local JSONL file (offline)."""

from __future__ import annotations

import json
from pathlib import Path

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def choice_task(folder: Path, name: str, rows: list[dict]) -> Path:
    """A folder holding task `name` (question, choices, label rows) and its data; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(TASK.format(name=name, data=data))
    return folder
