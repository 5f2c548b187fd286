"""Code versions derived from what each job script imports (skillmix.infra.provenance)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skillmix.infra.provenance import NOT_RESULTS, code_version, module_closure, script_modules

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflow" / "scripts"


def test_a_scripts_modules_are_its_imports_and_all_they_import() -> None:
    train = script_modules(SCRIPTS / "train.py")
    assert {"skillmix.mixing.job", "skillmix.engine.training", "skillmix.engine.sampling"} <= set(train)
    assert "skillmix.infra.jobs" in train  # start_log, write_parquet: what the job writes
    assert not NOT_RESULTS & set(train)  # the GPU lease decides where, not what
    assert "skillmix.plotting" not in train  # a figure's code never re-runs training
    drawing = {p.name for p in SCRIPTS.glob("*.py") if "skillmix.plotting" in script_modules(p)}
    assert drawing == {"evaluate.py", "compare.py", "select_composition.py", "evaluate_selected.py",
                       "compare_selected.py", "kernel_solve.py"}, drawing  # fmt: skip
    # dotted names: the kernel stage never reaches the data sources, the target builder
    # reaches them but no training code
    assert not [
        m for m in script_modules(SCRIPTS / "kernel_task.py") if m.startswith("skillmix.data.sources")
    ]
    target = set(script_modules(SCRIPTS / "select_target.py"))
    assert {"skillmix.selection.targets", "skillmix.data.sources", "skillmix.data.sources.tables"} <= target
    assert not {"skillmix.engine.training", "skillmix.mixing.job"} & target


def test_importing_a_submodule_counts_its_packages_not_its_siblings() -> None:
    closure = module_closure("skillmix.data.sources.addition")
    assert closure[:2] == ["skillmix", "skillmix.data"] and "skillmix.data.sources" in closure
    assert "skillmix.data.sources.addition" in closure
    assert code_version("data.sources.addition") == code_version("skillmix.data.sources.addition")


def test_every_rule_hashes_the_script_it_runs() -> None:
    """The rules name no modules: each `code` param is the version of the rule's own script."""
    rules = {}
    helpers = [p.read_text() for p in sorted((REPO / "rules" / "helpers").glob("*.smk"))]
    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule |checkpoint )", path.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if name is None:
                continue
            code = re.search(r'code=(?:script_code\(|method_code_version\(SCRIPTS / )"([\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./workflow/scripts/([\w.]+)"', block)
            param = re.search(r"code=(\w+_code_param)", block)
            if code is None and param:
                # a method's jobs: its script's version and its method's module (rules/helpers/)
                home = next(text for text in helpers if f"def {param.group(1)}(" in text)
                code = re.search(r'method_code_version\(SCRIPTS / "([\w.]+)"', home)
            assert code and script, f"rule {name.group(1)} in {path.name} lacks a code param or script"
            rules[name.group(1)] = (code.group(1), script.group(1))
    assert len(rules) >= 20
    assert all(code == script for code, script in rules.values()), rules


def _versions(src: Path) -> dict[str, str]:
    """Every script's code version, computed in a fresh interpreter that imports `src`."""
    program = (
        "import json, sys, pathlib\n"
        "from skillmix.infra.provenance import script_code_version\n"
        "print(json.dumps({p.name: script_code_version(p) "
        "for p in sorted(pathlib.Path(sys.argv[1]).glob('*.py'))}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", program, str(SCRIPTS)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("copy") / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


@pytest.mark.parametrize(
    ("module", "changed", "unchanged"),
    [
        ("kernel/kernels.py", {"kernel.py", "kernel_solve.py"}, {"train.py", "slice.py", "influence.py"}),
        ("data/sources/tables.py", {"slice.py", "select_target.py"}, {"kernel.py", "kernel_solve.py"}),
        ("selection/influence.py", {"influence.py"}, {"grads.py", "select.py", "train_selected.py"}),
        ("plotting.py", {"evaluate.py", "compare.py"}, {"train.py", "graph_run.py", "influence.py"}),
        ("infra/gpus.py", set(), None),  # None: no script changes
    ],
)
def test_an_edited_module_changes_exactly_the_scripts_that_reach_it(
    project_copy: Path, module: str, changed: set[str], unchanged: set[str] | None
) -> None:
    before = _versions(project_copy)
    path = project_copy / "skillmix" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        after = _versions(project_copy)
    finally:
        path.write_text(original)
    moved = {name for name in before if before[name] != after[name]}
    reach = {
        name
        for name in before
        if f"skillmix.{module.removesuffix('.py').replace('/', '.')}" in script_modules(SCRIPTS / name)
    }
    assert moved == reach  # exactly the scripts whose imports reach the module
    assert changed <= moved
    assert (not moved) if unchanged is None else not (unchanged & moved)


def test_imports_in_nested_statements_count(tmp_path: Path) -> None:
    """Imports inside functions, classes, try/except/finally, with, if/else, loops and match
    cases all count; names that only look like imports (strings, attributes) do not."""
    script = tmp_path / "nested.py"
    script.write_text(
        "import json\n"
        "def f():\n"
        "    from skillmix.infra import errors\n"
        "class C:\n"
        "    def m(self):\n"
        "        try:\n"
        "            import skillmix.data.slicing\n"
        "        except ImportError:\n"
        "            from skillmix.graph import units\n"
        "        finally:\n"
        "            from skillmix.infra.slugs import slugify\n"
        "with open('x') as fh:\n"
        "    if fh:\n"
        "        pass\n"
        "    else:\n"
        "        from skillmix.infra import config\n"
        "for _ in range(1):\n"
        "    match _:\n"
        "        case 0:\n"
        "            import skillmix.infra.jobs\n"
        "text = 'from skillmix.selection import influence'\n"
    )
    modules = set(script_modules(script))
    for wanted in (
        "skillmix.infra.errors",
        "skillmix.data.slicing",
        "skillmix.graph.units",
        "skillmix.infra.slugs",
        "skillmix.infra.config",
        "skillmix.infra.jobs",
    ):
        assert wanted in modules, wanted
    assert "skillmix.selection.influence" not in modules


def _strategy_versions(src: Path) -> dict[str, str]:
    """Every strategy's training code version, computed in a fresh interpreter that imports `src`."""
    program = (
        "import json, sys\n"
        "from skillmix.infra import registry\n"
        "from skillmix.infra.provenance import method_code_version\n"
        "print(json.dumps({n: method_code_version(sys.argv[1], 'strategy', n) "
        "for n in registry.names('strategy')}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", program, str(SCRIPTS / "train.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("module", "changed"),
    [
        ("mixing/skillit.py", {"skillit"}),
        # DoReMi's and RegMix's runs train on a given mixture, the sampler baselines.py defines
        ("mixing/baselines.py", {"random", "stratified", "target_only", "doremi", "regmix"}),
        ("mixing/odm.py", {"odm"}),
        ("mixing/aioli_params.py", {"aioli"}),
        ("mixing/curricula.py", {"curriculum", "anticurriculum", "skill_curriculum"}),
        ("engine/training.py", "all"),  # the engine every strategy trains with
    ],
)
def test_an_edited_strategy_module_changes_that_strategy_only(
    project_copy: Path, module: str, changed: set[str] | str
) -> None:
    before = _strategy_versions(project_copy)
    path = project_copy / "skillmix" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        after = _strategy_versions(project_copy)
    finally:
        path.write_text(original)
    moved = {name for name in before if before[name] != after[name]}
    assert moved == (set(before) if changed == "all" else changed)


def test_the_job_function_a_script_names_counts_as_an_import(tmp_path: Path) -> None:
    """Scripts that start their job through skillmix.infra.warm.run_job name the job function as a
    `skillmix.module:function` string: that module and all it imports count; a string naming no
    module, or not in that form, does not."""
    script = tmp_path / "job.py"
    script.write_text(
        "from skillmix.infra.warm import run_job\n"
        "run_job(dict(target='skillmix.mixing.job:train_job', kwargs={}), {})\n"
        "note = 'skillmix.selection.influence'\n"
        "other = 'skillmix.no_such_module:f'\n"
    )
    modules = set(script_modules(script))
    assert {"skillmix.mixing.job", "skillmix.engine.training"} <= modules
    assert "skillmix.selection.influence" not in modules
    assert "skillmix.infra.warm" not in modules  # how a job starts, never what it writes
    for name in ("train.py", "graph_run.py", "evaluate.py", "regmix_proxy.py", "grads.py", "warmup.py"):
        assert "skillmix.infra.jobs" in script_modules(SCRIPTS / name), name
