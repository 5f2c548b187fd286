"""Bad inputs, one row each: what the user gives, the stage that must stop it, the words its message
must hold, and nothing left behind under results/.

Stages, in the order a run meets them:
- ``config``: `snakemake -n` itself (schema, parse-time checks), run as a subprocess;
- ``slice``: the slice job (loading, strict cells, the config against the skills, the model's
  configuration, cut answers), run in-process as its script runs it (`make_slices` with
  `slice_checks`), on the config as the workflow completes it;
- ``dag``: `snakemake -n` on existing slices (checksums, the config edited after slicing);
- ``job``: the library function of the job that reads the input (given graphs, stamps).
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import MAIN_CONFIG, TINY_CONFIG, files_under, snakemake, write_yaml

from skillmix.data.slicing import make_slices
from skillmix.data.sources import resolve_tiny_tokenizer
from skillmix.infra.config import validate_config
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.gpus import lease_gpus
from skillmix.infra.jobs import write_parquet
from skillmix.infra.stamps import check_stamps
from skillmix.preflight import slice_checks

Files = Callable[[Path], dict[str, Any]]  # writes a case's files under a folder; returns config overrides


@dataclass
class Case:
    """One bad input: config overrides (and files written under the case's folder), the stage that
    must stop it, and the words its message must hold."""

    name: str
    stage: str
    words: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    files: Files | None = None
    damage: Callable[[Path], None] | None = None  # stage dag: done to the slices folder after slicing
    job: Callable[[Path], None] | None = None  # stage job: what the job runs, given the inputs folder
    workdir_files: dict[str, str] = field(default_factory=dict)  # written into the working folder


# ------------------------------------------------------------------------------------ helpers


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def table(name: str, write: Callable[[Path], None], **columns: Any) -> Files:
    """A table source: `write(path)` writes the file `name`; `columns` are source.table settings."""

    def files(folder: Path) -> dict[str, Any]:
        path = folder / name
        write(path)
        settings = {"skill_column": "skill", "prompt_column": "q", "answer_column": "a", **columns}
        return {"source": {"kind": "table", "table": {"path": str(path), **settings}}}

    return files


def rows(n: int = 30, skills: tuple[str, ...] = ("alpha", "beta")) -> list[dict[str, Any]]:
    return [{"skill": s, "q": f"what is {i}", "a": f"{i}"} for s in skills for i in range(n)]


def jsonl(records: list[dict[str, Any]]) -> Callable[[Path], None]:
    return lambda path: path.write_text("".join(json.dumps(r) + "\n" for r in records))


def parquet(records: list[dict[str, Any]]) -> Callable[[Path], None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return lambda path: pq.write_table(pa.Table.from_pylist(records), path)


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def gz(data: bytes, keep: float = 1.0) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        packed = gzip.compress(data)
        path.write_bytes(packed[: int(len(packed) * keep)])

    return write


def with_row(records: list[dict[str, Any]], index: int, **values: Any) -> list[dict[str, Any]]:
    records = copy.deepcopy(records)
    records[index].update(values)
    return records


def jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def ni_files(task_bytes: bytes | None = None, csv_text: str | None = None) -> Files:
    def files(folder: Path) -> dict[str, Any]:
        tasks = folder / "tasks"
        tasks.mkdir()
        task = {
            "Definition": ["Answer."],
            "Positive Examples": [],
            "Instances": [{"id": f"t-{i}", "input": f"q {i}", "output": [f"{i}"]} for i in range(30)],
        }
        (tasks / "task001_a.json").write_bytes(task_bytes or json.dumps(task).encode())
        (tasks / "task002_b.json").write_text(json.dumps(task))
        csv = folder / "categories.csv"
        csv.write_bytes(
            (csv_text or "task_file,ni_category\ntask001_a.json,cat_a\ntask002_b.json,cat_b\n").encode(
                "latin-1"
            )
        )
        return {
            "source": {
                "kind": "natural_instructions",
                "natural_instructions": {"tasks_dir": str(tasks), "categories_csv": str(csv)},
            }
        }

    return files


def given_graph(matrix: Any = None, data: bytes | None = None, names: list[str] | None = None) -> Files:
    def files(folder: Path) -> dict[str, Any]:
        path = folder / "graph.npy"
        if data is not None:
            path.write_bytes(data)
        else:
            np.save(path, matrix, allow_pickle=True)
        given = {"adjacency": str(path)}
        if names:
            (folder / "skills.txt").write_text("\n".join(names) + "\n")
            given["skills"] = str(folder / "skills.txt")
        return {"graph": {"method": "given", "given": given}}

    return files


GOOD = rows()


def edit_manifest(slices: Path, slug: str) -> None:
    manifest = json.loads((slices / "manifest.json").read_text())
    manifest["skills"][0]["slug"] = slug
    (slices / "manifest.json").write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------ the cases

CASES = [
    # --- config: snakemake -n refuses before any job
    Case(
        "YAML syntax error in config.yaml",
        "config",
        ["config.yaml: not valid YAML at line 3, column 1", "found '<stream end>'"],
        workdir_files={"config.yaml": "train:\n  strategies: [random,\n"},
    ),
    Case("unknown key", "config", ["lerning_rate"], {"train": {"lerning_rate": 0.1}}),
    Case("wrong type", "config", ["'ten' is not of type 'integer'"], {"train": {"steps": "ten"}}),
    Case("out of range", "config", ["-1 is less than the minimum of 1"], {"train": {"batch_size": -1}}),
    Case("unknown strategy", "config", ["'random2' is not one of"], {"train": {"strategies": ["random2"]}}),
    Case(
        "table path missing",
        "config",
        ["source.table.path", "does not exist"],
        {"source": {"kind": "table", "table": {"path": "data/typo.jsonl", "text_column": "t"}}},
    ),
    Case(
        "model folder missing",
        "config",
        ["model.name_or_path", "does not exist"],
        {"model": {"kind": "pretrained", "name_or_path": "./models/typo"}},
    ),
    Case(
        "target_only without target skills",
        "config",
        ["target_only", "train.target_skills"],
        {"train": {"strategies": ["target_only"]}},
    ),
    Case(
        "selection dim not a grads dim",
        "config",
        ["select.selection.dim is 7", "select.grads.dims"],
        {"select": {"selection": {"dim": 7}}},
    ),
    Case(
        "selection methods that score nothing",
        "config",
        ["select.methods", "at least one method that scores"],
        {"select": {"enabled": True, "target": {"skills": ["lego-1"]}, "methods": ["random"]}},
    ),
    Case(
        "unknown selection method",
        "config",
        ["config select.methods.1", "'rds+' is not one of"],
        {"select": {"methods": ["less", "rds+"]}},
    ),
    Case(
        "gradient graph from skillit",
        "config",
        ["'skillit' is not one of", "checkpoints"],
        {"graph": {"method": "gradient", "gradient": {"checkpoints": ["skillit"]}}},
    ),
    Case(
        "max_cut_share above 1",
        "config",
        ["config model.max_cut_share: 1.5 is greater than the maximum of 1"],
        {"model": {"max_cut_share": 1.5}},
    ),
    Case(
        "json format with a typo",
        "config",
        ["'jsn' is not one of"],
        {"source": {"table": {"format": "jsn"}}},
    ),
    # --- slice: bad data
    Case(
        "list prompt",
        "slice",
        ["data.parquet", "'q' (source.table.prompt_column)", "holds a list", "row-000000"],
        files=table("data.parquet", parquet([{**r, "q": [r["q"], "?"]} for r in GOOD])),
    ),
    Case(
        "bytes answer",
        "slice",
        ["'a' (source.table.answer_column) holds bytes"],
        files=table("data.parquet", parquet(with_row(GOOD, 5, a=b"5"))),
    ),
    Case(
        "dict text",
        "slice",
        ["'t' (source.table.text_column) holds a dict"],
        files=table(
            "data.jsonl",
            jsonl([{"skill": r["skill"], "t": {"x": 1}} for r in GOOD]),
            prompt_column=None,
            answer_column=None,
            text_column="t",
        ),
    ),
    Case(
        "mixed-type skills",
        "slice",
        ["holds both int and str skills", "row row-000001: 1", "'1'"],
        files=table("data.jsonl", jsonl([{**r, "skill": 1 if i % 2 else "1"} for i, r in enumerate(GOOD)])),
    ),
    Case(
        "skills differing by case",
        "slice",
        ["'alpha'", "'Alpha'", "'alpha '", "merge_skill_names"],
        files=table(
            "data.jsonl",
            jsonl([{**r, "skill": ["alpha", "Alpha", "alpha "][i % 3]} for i, r in enumerate(GOOD)]),
        ),
    ),
    Case(
        "non-UTF-8 JSONL",
        "slice",
        ["data.jsonl: line 4 is not valid UTF-8"],
        files=table(
            "data.jsonl", raw(jsonl_bytes(GOOD[:3]) + b'{"skill": "alpha", "q": "\xff", "a": "1"}\n')
        ),
    ),
    Case(
        "truncated .jsonl.gz",
        "slice",
        ["data.jsonl.gz: truncated or corrupt gzip file"],
        files=table("data.jsonl.gz", gz(jsonl_bytes(GOOD), keep=0.6)),
    ),
    Case(
        "non-UTF-8 CSV",
        "slice",
        ["data.csv: line 3 is not valid UTF-8"],
        files=table("data.csv", raw(b"skill,q,a\nalpha,x,1\nbeta,\xe9t\xe9,2\n")),
    ),
    Case(
        "invalid JSON line",
        "slice",
        ["data.jsonl: line 2 is not valid JSON"],
        files=table("data.jsonl", raw(jsonl_bytes(GOOD[:1]) + b"{oops\n")),
    ),
    Case(
        "JSON that is not a list",
        "slice",
        ["data.json: expected a JSON list of objects"],
        files=table("data.json", raw(b'{"skill": "alpha"}'), format="json"),
    ),
    Case(
        "missing column",
        "slice",
        ["column 'question' (source.table.prompt_column) not found"],
        files=table("data.jsonl", jsonl(GOOD), prompt_column="question"),
    ),
    Case(
        "empty answer",
        "slice",
        ["row row-000002", "empty or null answer"],
        files=table("data.jsonl", jsonl(with_row(GOOD, 2, a="  "))),
    ),
    Case(
        "duplicated ids",
        "slice",
        ["(source.table.id_column) has 1 duplicated id(s)", "dup"],
        files=table(
            "data.jsonl",
            jsonl([{**r, "id": "dup" if i < 2 else f"i{i}"} for i, r in enumerate(GOOD)]),
            id_column="id",
        ),
    ),
    Case(
        "null skill",
        "slice",
        ["row row-000004 has an empty or null skill"],
        files=table("data.jsonl", jsonl(with_row(GOOD, 4, skill=None))),
    ),
    Case(
        "text and prompt columns",
        "slice",
        ["sets both text_column and prompt_column"],
        files=table("data.jsonl", jsonl(GOOD), text_column="q"),
    ),
    Case("empty table", "slice", ["the table has no rows"], files=table("data.csv", raw(b"skill,q,a\n"))),
    Case(
        "too few examples for the split",
        "slice",
        ["skill 'alpha' has 3 examples, too few"],
        files=table("data.jsonl", jsonl(rows(3))),
    ),
    Case(
        "chat without an assistant answer",
        "slice",
        ["source.table.messages_column"],
        files=table(
            "data.jsonl",
            jsonl(
                [
                    {
                        "skill": r["skill"],
                        "m": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
                    }
                    for r in GOOD
                ]
            ),
            prompt_column=None,
            answer_column=None,
            messages_column="m",
        ),
    ),
    Case(
        "NI task file not UTF-8",
        "slice",
        ["task001_a.json: line 1 is not valid UTF-8"],
        files=ni_files(task_bytes=b'{"Definition": ["\xff"]}'),
    ),
    Case(
        "NI categories CSV not UTF-8",
        "slice",
        ["categories.csv: line 2 is not valid UTF-8"],
        files=ni_files(csv_text="task_file,ni_category\ntask001_a.json,caté\ntask002_b.json,cat_b\n"),
    ),
    # --- slice: the config against the skills and the model (config-only, seconds)
    Case(
        "unknown training skill",
        "slice",
        ["config train.skills: 'qq' is not a skill"],
        {"train": {"skills": ["qq"]}},
    ),
    Case(
        "unknown Skill-It target",
        "slice",
        ["config train.target_skills", "'lego-9'"],
        {"train": {"target_skills": ["lego-9"]}},
    ),
    Case(
        "prior of the wrong length",
        "slice",
        ["config skillit.prior: 2 weights, but there are 3 training skills"],
        {"skillit": {"prior": [1.0, 2.0]}},
    ),
    Case(
        "unknown LESS target skill",
        "slice",
        ["config select.target.skills", "'lego-7'"],
        {"select": {"enabled": True, "target": {"skills": ["lego-7"]}}},
    ),
    Case(
        "unknown pool skill",
        "slice",
        ["config select.pool.skills: 'qq'"],
        {"select": {"enabled": True, "target": {"skills": ["lego-1"]}, "pool": {"skills": ["qq"]}}},
    ),
    Case(
        "k as large as the pool",
        "slice",
        ["config select.selection.k: 500 is not smaller than the candidate pool"],
        {"select": {"enabled": True, "target": {"skills": ["lego-1"]}, "selection": {"k": 500}}},
    ),
    Case(
        "unknown kernel skill",
        "slice",
        ["config kernel.skills: 'qq'"],
        {"kernel": {"enabled": True, "skills": ["qq"]}},
    ),
    Case(
        "GPT-2 max_length beyond its positions",
        "slice",
        ["model.max_length", "model.tiny.max_positions"],
        {"model": {"tiny": {"architecture": "gpt2", "max_positions": 64}, "max_length": 96}},
    ),
    Case(
        "heads not dividing hidden",
        "slice",
        ["model.tiny.num_heads", "model.tiny.hidden_size"],
        {"model": {"tiny": {"num_heads": 3}}},
    ),
    Case(
        "answers cut above the share",
        "slice",
        ["config model.max_length: model.max_length 64 cuts the answer of 30 of 60", "max_cut_share (20.0%)"],
        {"model": {"max_length": 64}},
        table("data.jsonl", jsonl([{**r, "a": "x" * 200} if i % 2 == 0 else r for i, r in enumerate(GOOD)])),
    ),
    # --- dag: on existing slices, before any job runs (so before any output is deleted)
    Case(
        "zero-byte slice",
        "dag",
        ["train/lego-2.parquet: slice file damaged or changed after slicing", "snakemake --forcerun slice"],
        damage=lambda slices: (slices / "train" / "lego-2.parquet").write_bytes(b""),
    ),
    Case(
        "slice edited",
        "dag",
        ["val/lego-1.parquet: slice file damaged or changed after slicing"],
        damage=lambda slices: (slices / "val" / "lego-1.parquet").open("ab").write(b"x"),
    ),
    Case(
        "manifest slug leaving results",
        "dag",
        ["has slug '../../../x', not the slug slicing gives"],
        damage=lambda slices: edit_manifest(slices, "../../../x"),
    ),
    Case(
        "kernel skill edited after slicing",
        "dag",
        ["config kernel.skills: 'qq' is not a skill"],
        {"kernel": {"enabled": True, "skills": ["qq"]}},
    ),
    Case(
        "prior edited after slicing",
        "dag",
        ["config skillit.prior: 1 weights, but there are 3"],
        {"skillit": {"prior": [1.0]}},
    ),
    Case(
        "curriculum budget beyond the pool",
        "slice",
        ["config train.steps: ['curriculum'] draw each training example once", "exceeds the 120"],
        {"train": {"strategies": ["curriculum"], "steps": 100, "batch_size": 8}},
    ),
    Case(
        "target_only on a skill it does not train",
        "slice",
        ["config train.target_skills: target_only trains on them, but ['lego-3'] are not training skills"],
        {
            "train": {
                "strategies": ["target_only"],
                "skills": ["lego-1", "lego-2"],
                "target_skills": ["lego-3"],
            }
        },
    ),
    Case(
        "fresh examples from a table",
        "slice",
        ["config train.data: fresh needs a synthetic source", "'table'"],
        {"train": {"data": "fresh"}},
        table("data.jsonl", jsonl(GOOD)),
    ),
    Case(
        "given graph without a skill of the data",
        "slice",
        ["lego-3"],
        files=given_graph(np.eye(2), names=["lego-1", "lego-2"]),
    ),
    Case(
        "given graph of garbage bytes",
        "slice",
        ["config graph.given.adjacency", "graph.npy", "expected a NumPy .npy file"],
        files=given_graph(data=b"this is not a numpy file"),
    ),
    Case(
        "given graph that is pickled objects",
        "slice",
        ["config graph.given.adjacency", "graph.npy", "never unpickled"],
        files=given_graph(np.array([{"a": 1}, None], dtype=object)),
    ),
    Case(
        "given graph of the wrong shape",
        "slice",
        ["config graph.given.adjacency", "graph.npy"],
        files=given_graph(np.ones(3)),
    ),
    Case(
        "given graph of huge values",
        "slice",
        ["config graph.given.adjacency", "graph.npy", "1e+308"],
        files=given_graph(np.full((3, 3), 1e308)),
    ),
    Case(
        "given graph with NaN",
        "slice",
        ["config graph.given.adjacency", "graph.npy"],
        files=given_graph(np.array([[1, np.nan, 0], [0, 1, 0], [0, 0, 1]])),
    ),
    # --- job: what a job meets when it starts or combines outputs
    Case(
        "graph runs of two settings",
        "job",
        ["1 of 2 graph runs were made with other settings", "graph.runs.lr: 0.01 there, 0.001 now", "rm "],
        job=lambda folder: mixed_runs(folder),
    ),
    Case(
        "RDS+ target skill without examples",
        "job",
        ["RDS+", "target 'lego-3' has no examples"],
        job=lambda folder: rds_target_without_examples(folder),
    ),
    Case(
        "GPU lock folder a symlink",
        "job",
        ["is a symbolic link", "SKILLMIX_GPU_LOCK_DIR"],
        job=lambda folder: lease_in(folder, symlink=True),
    ),
    Case(
        "GPU lock folder open to others",
        "job",
        ["group/other write", "SKILLMIX_GPU_LOCK_DIR"],
        job=lambda folder: lease_in(folder, symlink=False),
    ),
]


# ------------------------------------------------------------------------------------ the runners


def configs_for(case: Case, folder: Path) -> dict[str, Any]:
    """The case's overrides, after writing its files under `folder`."""
    overrides = case.files(folder) if case.files else {}
    return merge(overrides, case.overrides)


def workflow_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """config.yaml, tests/configs/tiny.yaml and `overrides`, completed as the Snakefile does."""
    cfg = yaml.safe_load(MAIN_CONFIG.read_text())
    cfg = merge(merge(cfg, yaml.safe_load(TINY_CONFIG.read_text())), overrides)
    validate_config(cfg)
    cfg["model"]["tiny"] = resolve_tiny_tokenizer(cfg["model"], cfg["source"])
    return cfg


def run_slice(cfg: dict[str, Any], workdir: Path) -> None:
    """What the slice job runs (workflow/scripts/slice.py)."""
    make_slices(cfg["source"], cfg["split"], workdir / "results" / "slices", check=slice_checks(cfg))


def mixed_runs(folder: Path) -> None:
    """What graph assembly checks first (workflow/scripts/graph_assemble.py): two runs, one left
    from an interrupted run with another learning rate."""
    now, old = {"graph.runs": {"lr": 0.001}, "code": "c"}, {"graph.runs": {"lr": 0.01}, "code": "c"}
    curves = [folder / "a.parquet", folder / "b.parquet"]
    write_parquet(pd.DataFrame({"step": [0]}), curves[0], stamp=now)
    write_parquet(pd.DataFrame({"step": [0]}), curves[1], stamp=old)
    check_stamps({curve: now for curve in curves}, "graph runs")


def rds_target_without_examples(folder: Path) -> None:
    """What RDS+'s scores job meets when a named target skill has no target examples."""
    from skillmix.selection.rds import scores_job

    pool = pd.DataFrame({"id": ["a", "b"], "skill": ["lego-1", "lego-2"]})
    pool.to_parquet(folder / "pool.parquet")
    np.save(folder / "pool.npy", np.eye(2, dtype=np.float32))
    pool.to_parquet(folder / "pool_index.parquet")
    np.save(folder / "target.npy", np.eye(2, dtype=np.float32)[:1])
    pd.DataFrame({"id": ["t"], "skill": ["lego-1"]}).to_parquet(folder / "target_index.parquet")
    pairs = [(folder / f"{n}.npy", folder / f"{n}_index.parquet") for n in ("pool", "target")]
    scores_job(folder / "pool.parquet", pairs[0], pairs[1], folder / "scores.parquet", ["lego-1", "lego-3"])


def lease_in(folder: Path, symlink: bool) -> None:
    """A job's GPU lease (skillmix.infra.jobs.start_log) in a lock folder it must not trust."""
    target = folder / "locks"
    target.mkdir(mode=0o777)
    target.chmod(0o777)
    chosen = folder / "link" if symlink else target
    if symlink:
        chosen.symlink_to(target)
    env = {"SKILLMIX_GPU_LOCK_DIR": str(chosen), "SKILLMIX_GPU_POOL": "0"}
    lease_gpus(1, environ=env)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_stops_at_its_stage_naming_it(case: Case, tmp_path: Path) -> None:
    inputs, workdir = tmp_path / "inputs", tmp_path / "work"
    inputs.mkdir()
    workdir.mkdir()
    overrides = configs_for(case, inputs)
    sliced: list[Path] = []
    for name, text in case.workdir_files.items():
        (workdir / name).write_text(text)
    if case.stage == "dag":  # slices of the tiny config, then the damage
        run_slice(workflow_config({}), workdir)
        if case.damage:
            case.damage(workdir / "results" / "slices")
        sliced = files_under(workdir / "results")
    if case.stage in ("config", "dag"):
        override = write_yaml(inputs / "override.yaml", overrides)
        dry = ["-n"] if case.stage == "config" else []  # dag: a real run, stopped before any job
        result = snakemake(workdir, *dry, configs=(MAIN_CONFIG, TINY_CONFIG, override))
        assert result.returncode != 0, result.describe()
        message = result.output
    else:
        cfg = workflow_config(overrides)
        with pytest.raises(SkillmixInputError) as caught:
            run_slice(cfg, workdir) if case.stage == "slice" else case.job(inputs)
        message = str(caught.value)
    for words in case.words:
        assert words in message, f"{case.name}: {words!r} not in:\n{message[-3000:]}"
    assert files_under(workdir / "results") == sliced, f"{case.name} left {files_under(workdir / 'results')}"


def test_the_table_has_at_least_40_cases_over_every_stage() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert {c.stage for c in CASES} == {"config", "slice", "dag", "job"}
