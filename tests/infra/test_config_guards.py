"""Config guards (issue 29, reliability): numbers the schema's bounds let through, config files that
are not plain YAML, and inputs whose scale or kind would exhaust memory. One row each: what the user
gives, the words its message must hold; every case stops with SkillmixInputError before any job,
naming the key or file. A few rows run `snakemake -n` itself (the files Snakemake reads)."""

from __future__ import annotations

import copy
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, files_under, snakemake

from skillmix.infra.config import check_yaml_file, schema, validate_config
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.inputs import check_data_paths, model_files, source_files
from skillmix.infra.scale import MAX_PLANNED_JOBS, check_planned_jobs


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def tiny_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.yaml, tests/configs/tiny.yaml and `overrides`, not yet validated."""
    cfg = merge(yaml.safe_load(MAIN_CONFIG.read_text()), yaml.safe_load(TINY_CONFIG.read_text()))
    return merge(cfg, overrides or {})


NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------ the schema: validate_config rows


@dataclass
class Row:
    name: str
    overrides: dict[str, Any]
    words: list[str]


SCHEMA_ROWS = [
    # numbers no minimum/maximum rejects: every comparison with NaN is false
    Row(
        "NaN max_cut_share", {"model": {"max_cut_share": NAN}}, ["config model.max_cut_share", "not a finite"]
    ),
    Row("NaN learning rate", {"train": {"lr": NAN}}, ["config train.lr: nan", "not a finite number"]),
    Row("infinite learning rate", {"train": {"lr": INF}}, ["config train.lr: inf", "not a finite number"]),
    Row("infinite beta", {"train": {"betas": [0.9, INF]}}, ["config train.betas.1: inf"]),
    Row("-inf threshold", {"graph": {"assemble": {"threshold": -INF}}}, ["graph.assemble.threshold: -inf"]),
    Row("NaN prior weight", {"skillit": {"prior": [1.0, NAN, 1.0]}}, ["config skillit.prior.1: nan"]),
    Row("NaN in a oneOf size", {"split": {"val": NAN}}, ["config split.val: nan", "not a finite"]),
    Row("NaN lm_eval limit", {"lm_eval": {"limit": NAN}}, ["config lm_eval.limit: nan"]),
    # seeds: numpy refuses negative ones (late, naming no key)
    Row("negative seed", {"train": {"seed": -1}}, ["config train.seed: -1 is less than the minimum of 0"]),
    Row("negative split seed", {"split": {"seed": -5}}, ["config split.seed: -5 is less than the minimum"]),
    Row("seed above numpy's", {"source": {"seed": 2**40}}, ["config source.seed", "maximum of 2147483647"]),
    # sizes that die as a raw allocation error
    Row(
        "examples per skill",
        {"source": {"lego": {"examples_per_skill": 10**12}}},
        ["config source.lego.examples_per_skill", "maximum of 1000000"],
    ),
    Row(
        "examples per skill, one of a list",
        {"source": {"lego": {"examples_per_skill": [60, 10**12, 60]}}},
        ["config source.lego.examples_per_skill", "[1]: 1000000000000 is greater than the maximum"],
    ),
    Row("hidden size", {"model": {"tiny": {"hidden_size": 10**9}}}, ["config model.tiny.hidden_size"]),
    Row("max_length", {"model": {"max_length": 10**9}}, ["config model.max_length", "maximum of 131072"]),
    Row("batch size", {"train": {"batch_size": 10**9}}, ["config train.batch_size", "maximum of 65536"]),
    Row("LoRA rank", {"model": {"lora": {"r": 10**7}}}, ["config model.lora.r", "maximum of 4096"]),
    Row("grads dims", {"select": {"grads": {"dims": [2**40]}}}, ["config select.grads.dims.0"]),
    Row(
        "tiny model too large within each bound",
        {"model": {"tiny": {"hidden_size": 8192, "intermediate_size": 32768, "num_layers": 64}}},
        ["config model.tiny", "parameters", "above the tiny model's limit", "model.kind pretrained"],
    ),
    # lists peft or the stages cannot take empty
    Row(
        "empty LoRA target_modules",
        {"model": {"lora": {"target_modules": []}}},
        ["config model.lora.target_modules: [] should be non-empty"],
    ),
    # unknown keys: short, the close names, a homoglyph shown escaped with its ASCII key
    Row(
        "unknown key",
        {"train": {"stepz": 10}},
        ["config train: unknown key(s) ['stepz']; expected keys from this block: did you mean 'steps'?"],
    ),
    Row(
        "homoglyph key",
        {"tr\u0430in": {"steps": 10}},
        ["unknown key(s) ['tr\\u0430in'", "U+0430 CYRILLIC SMALL LETTER A", "did you mean 'train'"],
    ),
    Row(
        "homoglyph strategy",
        {"train": {"strategies": ["r\u0430ndom"]}},
        ["config train.strategies.0", "'r\\u0430ndom'", "did you mean 'random'"],
    ),
    Row(
        "one of several choices",
        {"select": {"base_run": "nope"}},
        ["config select.base_run", "not of type 'null'", "'nope' is not one of"],
    ),
    # scale: the synthetic source names its skills, so the config alone decides
    Row(
        "brute-force graph over too many skills",
        {
            "source": {
                "kind": "xor",
                "xor": {"maps": [f"m{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(500)]},
            }
        },
        [
            "config graph.method: brute_force over the 502 skills of source.xor",
            "graph.method linear",
            "gradient",
        ],
    ),
]


@pytest.mark.parametrize("row", SCHEMA_ROWS, ids=[r.name for r in SCHEMA_ROWS])
def test_a_bad_value_is_refused_naming_its_key(row: Row) -> None:
    cfg = tiny_config(row.overrides)
    with pytest.raises(SkillmixInputError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    for words in row.words:
        assert words in message, f"{row.name}: {words!r} not in {message!r}"
    assert len(message) < 700 and "\n" not in message, message


def test_the_xor_maps_row_names_real_map_names() -> None:
    maps = SCHEMA_ROWS[-1].overrides["source"]["xor"]["maps"]
    assert len(set(maps)) == 500 and all(re.fullmatch("[a-z]+", m) for m in maps)


def test_unknown_keys_with_no_close_name_list_their_level_only() -> None:
    with pytest.raises(SkillmixInputError) as caught:
        validate_config(tiny_config({"train": {"lerning_rate": 0.1}}))
    message = str(caught.value)
    assert "unknown key(s) ['lerning_rate']; expected keys from ['batch_size'," in message
    assert "resources" not in message and len(message) < 400, message


def test_every_seed_is_a_non_negative_integer_numpy_takes() -> None:
    def seeds(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for key, spec in (node.get("properties") or {}).items():
            where = f"{path}.{key}".lstrip(".")
            if key.endswith("seed"):
                found.append((where, spec))
            found += seeds(spec, where)
        return found

    specs = seeds(schema(), "")
    assert len(specs) >= 15
    for where, spec in specs:
        assert spec.get("minimum") == 0 and spec.get("maximum", 2**32) < 2**32, where


def test_the_repositorys_configs_still_validate() -> None:
    main = yaml.safe_load(MAIN_CONFIG.read_text())
    files = [
        MAIN_CONFIG,
        *sorted((REPO / "tests" / "configs").glob("*.yaml")),
        *map(Path, sorted(glob.glob(str(REPO / "examples" / "**" / "*.yaml"), recursive=True))),
    ]
    checked = 0
    for path in files:
        check_yaml_file(path)
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and set(data) & {"source", "train", "model", "graph", "select", "kernel"}:
            validate_config(merge(main, data))
            checked += 1
    assert checked >= 5


# --------------------------------------------------------------------- config files: check_yaml_file


FILE_ROWS = [
    (
        "a key twice",
        "train:\n  steps: 10\nmodel:\n  max_length: 64\ntrain:\n  lr: 0.01\n",
        ["key train is given twice (line 1 and line 5)", "silently drop"],
    ),
    (
        "a nested key twice",
        "train:\n  lr: 0.1\n  steps: 3\n  lr: 0.2\n",
        ["key train.lr is given twice (line 2 and line 4)"],
    ),
    (
        "YTE templating",
        '__use_yte__: true\ntrain:\n  steps: ?__import__("os").getpid()\n',
        ["line 1 sets __use_yte__", "run its Python expressions", "plain YAML"],
    ),
    ("YTE switched off", "__use_yte__: false\ntrain:\n  steps: 3\n", ["sets __use_yte__"]),
]


@pytest.mark.parametrize(("name", "text", "words"), FILE_ROWS, ids=[r[0] for r in FILE_ROWS])
def test_a_config_file_that_is_not_plain_yaml_is_refused(tmp_path, name, text, words) -> None:
    path = tmp_path / "override.yaml"
    path.write_text(text)
    with pytest.raises(SkillmixInputError) as caught:
        check_yaml_file(path)
    message = str(caught.value)
    assert str(path) in message
    for w in words:
        assert w in message, f"{name}: {w!r} not in {message!r}"


def test_merge_keys_and_equal_keys_in_separate_blocks_are_fine(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.1}\ntrain:\n  <<: *b\n  steps: 3\nselect:\n  warmup:\n    steps: 3\n")
    check_yaml_file(path)


# ------------------------------------------------------------------------------ paths and scale


def dev_zero_link(folder: Path) -> Path:
    link = folder / "data.jsonl"
    link.symlink_to("/dev/zero")
    return link


def table_linked_to_dev_zero(folder: Path) -> Any:
    return source_files({"kind": "table", "table": {"path": str(dev_zero_link(folder))}})


def table_a_pipe(folder: Path) -> Any:
    os.mkfifo(folder / "pipe.jsonl")
    return source_files({"kind": "table", "table": {"path": str(folder / "pipe.jsonl")}})


def device_in_a_data_folder(folder: Path) -> Any:
    (folder / "disk").mkdir()
    dev_zero_link(folder / "disk")
    return source_files({"kind": "table", "table": {"path": str(folder / "disk"), "format": "hf_disk"}})


def hf_data_files_a_device(folder: Path) -> Any:
    table = {"format": "hf", "hf_name": "json", "data_files": [str(dev_zero_link(folder))]}
    return source_files({"kind": "table", "table": table})


def given_graph_a_device(folder: Path) -> Any:
    return check_data_paths(validated({"graph": {"given": {"adjacency": str(dev_zero_link(folder))}}}))


def model_at_root(folder: Path) -> Any:
    return model_files({"kind": "pretrained", "name_or_path": "/"})


def model_folder_above_the_model(folder: Path) -> Any:
    (folder / "notes.txt").write_text("x")
    return model_files({"kind": "pretrained", "name_or_path": str(folder)})


def model_folder_of_too_many_files(folder: Path) -> Any:
    (folder / "config.json").write_text("{}")
    for index in range(10_001):
        (folder / f"shard{index}.bin").touch()
    return model_files({"kind": "pretrained", "name_or_path": str(folder)})


def table_of_10000_skills(folder: Path) -> Any:
    return check_planned_jobs(validated({"source": {"kind": "table"}}), 10_000)


def regmix_and_graph_beyond_the_limit(folder: Path) -> Any:
    return validated({"train": {"strategies": ["regmix", "skillit"]}, "regmix": {"runs": 100_000}})


HAS_DEVICES = Path("/dev/zero").exists() and hasattr(os, "mkfifo")

PATH_ROWS = [
    (
        "table path links to /dev/zero",
        table_linked_to_dev_zero,
        ["config source.table.path", "a link to /dev/zero", "a character device, not a regular file"],
    ),
    ("table path a named pipe", table_a_pipe, ["config source.table.path", "pipe.jsonl", "is a pipe"]),
    (
        "a device inside a data folder",
        device_in_a_data_folder,
        ["config source.table.path", "disk/data.jsonl", "a character device"],
    ),
    (
        "hf data_files a device",
        hf_data_files_a_device,
        ["config source.table.data_files", "a character device"],
    ),
    ("given graph a device", given_graph_a_device, ["config graph.given.adjacency", "a character device"]),
    (
        "model path the filesystem root",
        model_at_root,
        ["config model.name_or_path: / is the filesystem root"],
    ),
    (
        "model path a folder above the model",
        model_folder_above_the_model,
        ["config model.name_or_path", "is not a model folder", "config.json"],
    ),
    (
        "model folder of too many files",
        model_folder_of_too_many_files,
        ["config model.name_or_path", "holds more than 10,000 files"],
    ),
    (
        "brute-force graph over the sliced skills of a table",
        table_of_10000_skills,
        [
            "config graph.method: brute_force over the 10,000 skills of the data",
            "50,005,000 graph runs",
            "graph.method linear (10,000 runs)",
            "fewer skills",
        ],
    ),
    (
        "RegMix proxies and graph runs beyond the job limit",
        regmix_and_graph_beyond_the_limit,
        ["config regmix.runs: 100,000 RegMix proxy runs", "and 6 graph runs", "regmix.proxy_runs"],
    ),
]


def validated(overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = tiny_config(overrides)
    validate_config(cfg)
    return cfg


@pytest.mark.parametrize(("name", "call", "words"), PATH_ROWS, ids=[r[0] for r in PATH_ROWS])
def test_an_input_of_the_wrong_kind_or_scale_is_refused(tmp_path, name, call, words) -> None:
    if not HAS_DEVICES:
        pytest.skip("needs /dev/zero and named pipes")
    with pytest.raises(SkillmixInputError) as caught:
        call(tmp_path)
    message = str(caught.value)
    for w in words:
        assert w in message, f"{name}: {w!r} not in {message!r}"


def test_the_job_limit_lets_the_usual_graphs_through() -> None:
    cfg = validated({})
    check_planned_jobs(cfg, 200)  # 20,100 brute-force runs
    check_planned_jobs(validated({"graph": {"method": "linear"}}), MAX_PLANNED_JOBS)
    check_planned_jobs(validated({"graph": {"method": "gradient"}}), 10**6)
    check_planned_jobs(validated({"train": {"strategies": ["random"]}}), 10**6)  # no graph needed


def test_a_model_folder_and_data_files_still_pass(tmp_path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert model_files({"kind": "pretrained", "name_or_path": str(model)}) == {
        "model.name_or_path": [str(model / "config.json")]
    }
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)  # a link to a regular file is fine
    assert source_files({"kind": "table", "table": {"path": str(link)}}) == {"source.table.path": [str(link)]}


# ------------------------------------------------------- snakemake -n: the files Snakemake reads itself


def dry_run(tmp_path: Path, override_text: str, workdir_config: str | None = None):
    work = tmp_path / "work"
    work.mkdir()
    if workdir_config is not None:
        (work / "config.yaml").write_text(workdir_config)
    override = tmp_path / "override.yaml"
    override.write_text(override_text)
    result = snakemake(work, "-n", configs=(MAIN_CONFIG, TINY_CONFIG, override))
    assert result.returncode != 0, result.describe()
    assert files_under(work / "results") == [], files_under(work / "results")
    return result


def test_snakemake_refuses_a_key_given_twice_in_a_configfile(tmp_path) -> None:
    result = dry_run(tmp_path, "train:\n  steps: 10\nmodel:\n  max_length: 64\ntrain:\n  lr: 0.01\n")
    assert "override.yaml: key train is given twice (line 1 and line 5)" in result.output, result.describe()


def test_snakemake_refuses_yte_and_never_runs_the_workflows_own_config(tmp_path) -> None:
    marker = tmp_path / "ran"
    template = (
        f'__use_yte__: true\ntrain:\n  steps: ?__import__("pathlib").Path("{marker}").write_text("x")\n'
    )
    result = dry_run(tmp_path, "train:\n  steps: 3\n", workdir_config=template)
    assert "config.yaml: line 1 sets __use_yte__" in result.output, result.describe()
    assert not marker.exists()  # refused before Snakemake read the workflow's config.yaml
    # a --configfile is rendered by Snakemake before the workflow is parsed: refused, but it has run
    # (README: config files are code when they set __use_yte__)
    (tmp_path / "cli").mkdir()
    result = dry_run(tmp_path / "cli", template)
    assert "override.yaml: line 1 sets __use_yte__" in result.output, result.describe()


def test_snakemake_names_a_nan_in_one_short_line(tmp_path) -> None:
    result = dry_run(tmp_path, "model:\n  max_cut_share: .nan\n")
    assert "config model.max_cut_share: nan (YAML .nan or .inf) is not a finite number" in result.output
    schema_lines = [line for line in result.output.splitlines() if "description" in line]
    assert not schema_lines, result.describe()
