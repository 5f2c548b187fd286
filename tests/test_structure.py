"""The standing limits of the code's structure, which regress silently otherwise: module and
function sizes, and imports that flow one way (infra ← data ← engine ← stages ← workflow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "skillmix"

LAYERS = {"infra": 0, "data": 1, "engine": 2}
"""The shared layers, bottom up; every other subpackage or module is a stage (graph, mixing,
selection, kernel, harness, plotting) or sits above them (preflight, the workflow's checks)."""
ABOVE_STAGES = {"preflight"}
PUBLIC = {"skillmix.graph.store", "skillmix.graph.units"}
"""Modules of a stage that other stages may read: the graph folder's format, the graph units' names."""
SHARED_BY_STAGES = {"plotting"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        dotted = ".".join(("skillmix", *parts)).removesuffix(".__init__")
        found.append((dotted, path))
    return found


def _part(module: str) -> str:
    """The subpackage (or top-level module) of a dotted skillmix name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Every skillmix module a file imports, also inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("skillmix"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("skillmix"))
    return names


def _allowed(importer: str, imported: str) -> bool:
    a, b = _part(importer), _part(imported)
    if a == b or b == "":
        return True
    if a in ABOVE_STAGES:
        return True
    if a in LAYERS:  # a shared layer imports only layers below it
        return b in LAYERS and LAYERS[b] < LAYERS[a]
    # a stage: the shared layers, plotting, and other stages' public modules only
    return b in LAYERS or b in SHARED_BY_STAGES or imported in PUBLIC


def test_imports_flow_one_way() -> None:
    climbs = [
        f"{module} imports {name}"
        for module, path in _modules()
        for name in sorted(_imports(path))
        if not _allowed(module, name)
    ]
    assert not climbs, "\n".join(climbs)


def test_the_layer_rule_catches_a_climb() -> None:
    assert not _allowed("skillmix.infra.config", "skillmix.mixing.skillit")
    assert not _allowed("skillmix.engine.training", "skillmix.selection.less")
    assert not _allowed("skillmix.data.slicing", "skillmix.engine.encoding")
    assert not _allowed("skillmix.mixing.job", "skillmix.selection.influence")
    assert _allowed("skillmix.mixing.job", "skillmix.graph.store")
    assert _allowed("skillmix.engine.training", "skillmix.infra.processes")


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_modules_and_functions_are_small(module: str, path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400, f"{module}: {len(source.splitlines())} lines"
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80
    ]
    assert not long, f"{module}: {long}"


def test_rules_common_is_short() -> None:
    lines = (REPO / "rules" / "common.smk").read_text().splitlines()
    assert len(lines) <= 250


def test_docstrings_cite_sections_that_exist() -> None:
    """Every `docs/methods/<note>.md#<anchor>` the library cites names a heading of that note."""
    import re

    cited = set()
    for _, path in _modules():
        cited |= set(re.findall(r"docs/methods/([a-z_]+\.md)#([a-z0-9-]+)", path.read_text(encoding="utf-8")))
    assert cited
    missing = []
    for note, anchor in sorted(cited):
        lines = (REPO / "docs" / "methods" / note).read_text(encoding="utf-8").splitlines()
        anchors = {re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
                   for line in lines if line.startswith("## ")}  # fmt: skip
        if anchor not in anchors:
            missing.append(f"{note}#{anchor}")
    assert not missing, missing
