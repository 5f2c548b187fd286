"""Code versions: content hashes of library modules, passed to rules as parameters.

Snakemake re-runs a job when its script or params change, but not when a module the script
imports changes; a hash of the modules a rule uses, and of every `skillmix` module they import
in turn, given as a param, closes that gap: editing a module re-runs exactly the stages whose
code reaches it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path


def module_path(module: str) -> Path:
    """The source file of `skillmix.<module>` (a package's __init__.py covers its folder)."""
    spec = importlib.util.find_spec(f"skillmix.{module}")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"skillmix.{module}")
    return Path(spec.origin)


@cache
def _package_root() -> Path:
    """The folder of the `skillmix` package."""
    return module_path("__init__").parent


def _module_files(module: str) -> list[Path]:
    path = module_path(module)
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


def _is_module(name: str) -> bool:
    """Whether `skillmix.<name>` is a module or subpackage of the package (not, e.g., a function)."""
    root = _package_root()
    return (root / f"{name}.py").is_file() or (root / name / "__init__.py").is_file()


@cache
def _direct_imports(module: str) -> frozenset[str]:
    """The top-level `skillmix` modules that `module`'s source imports (anywhere in its code)."""
    found: set[str] = set()
    for file in _module_files(module):
        package = file.relative_to(_package_root()).with_suffix("").parts[:-1]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import inside a subpackage
                    base = ".".join(["skillmix", *package[: len(package) - node.level + 1], base]).rstrip(".")
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for name in names:
                parts = name.split(".")
                if parts[0] == "skillmix" and len(parts) > 1 and _is_module(parts[1]):
                    found.add(parts[1])
    return frozenset(found - {module})


def module_closure(*modules: str) -> list[str]:
    """`modules` and every `skillmix` module they import, directly or not, sorted (top-level
    names: a subpackage such as `sources` counts as a whole)."""
    todo, seen = [m.split(".")[0] for m in modules], set()
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_direct_imports(m))
    return sorted(seen)


@cache
def _code_version(modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for module in module_closure(*modules):
        for file in _module_files(module):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def code_version(*modules: str) -> str:
    """A short hash of the source of the named `skillmix` modules and of all they import
    (packages: every .py inside)."""
    return _code_version(tuple(sorted(set(modules))))
