"""lm-evaluation-harness on a saved model folder, offline, with a task defined by a local YAML file."""

from __future__ import annotations

import math

import pytest
from lm_eval_tasks import choice_task

from skillmix.engine.modeling import build_tiny_model, save_model
from skillmix.harness import results_table, run_lm_eval
from skillmix.infra.errors import SkillmixInputError

# lm-eval is the optional extra `lmeval`; without it every test here skips (at collection, so the
# reason is reported once per module and nothing below runs)
pytest.importorskip("lm_eval", reason="lm-eval is not installed (the extra: pip install -e '.[lmeval]')")
pytestmark = pytest.mark.extras  # CI runs them again once the extras are installed


def test_lm_eval_scores_a_saved_model_on_a_local_task(tmp_path) -> None:
    model, tokenizer = build_tiny_model(
        {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2, "max_positions": 96}, 0
    )
    folder = tmp_path / "model"
    save_model(model, tokenizer, folder)
    # the second choice is the first repeated: an untrained byte model gives it the lower likelihood,
    # so accuracy (choice 0 correct) is 1 and, with the answer moved to 1, accuracy is 0
    rows = [
        {"question": f"{a} plus {b} is", "choices": [str(a + b), str(a + b) * 8], "label": 0}
        for a in range(3)
        for b in range(2)
    ]
    tasks = choice_task(tmp_path / "tasks", "toy_sum", rows)
    results = run_lm_eval(folder, ["toy_sum"], include_path=tasks, batch_size=4)
    table = results_table("tiny", results)
    assert table[["model", "task", "metric", "n"]].values.tolist() == [["tiny", "toy_sum", "acc", 6]]
    assert table["value"].iloc[0] == 1.0 and math.isfinite(table["stderr"].iloc[0])
    flipped = [{**r, "label": 1} for r in rows]
    tasks2 = choice_task(tmp_path / "flipped", "toy_sum", flipped)
    again = results_table(
        "tiny", run_lm_eval(folder, ["toy_sum"], include_path=tasks2, batch_size=4, limit=3)
    )
    assert again["value"].iloc[0] == 0.0 and again["n"].iloc[0] == 3
    with pytest.raises(SkillmixInputError, match=r"lm_eval.tasks: lm-eval knows no task \['no_such_task'\]"):
        run_lm_eval(folder, ["no_such_task"], include_path=tasks)
