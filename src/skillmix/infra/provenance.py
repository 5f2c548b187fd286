"""Code versions: content hashes of the library code a job's script runs, passed to rules as params.

Snakemake re-runs a job when its script or params change, but not when a module the script
imports changes. :func:`script_code_version` closes that gap: it reads the script's `skillmix`
imports and the modules of the job functions it names (``skillmix.module:function``), follows
them through the library (dotted module names: importing
``skillmix.data.sources.xor`` counts ``skillmix.data.sources.xor`` and the packages above it, not the
package's other modules), and hashes those files. So editing a module re-runs exactly the rules
whose scripts reach it, and what follows them. Imports anywhere in a file count (also those
inside functions). Modules that cannot change a result, such as the GPU lease
(:data:`NOT_RESULTS`), are left out.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = "skillmix"
NOT_RESULTS: frozenset[str] = frozenset({"skillmix.infra.gpus", "skillmix.infra.warm"})
"""Modules whose code decides how a job runs, never what it writes."""
_TARGET = re.compile(rf"({PACKAGE}(?:\.\w+)+):\w+")


def module_path(module: str) -> Path:
    """The source file of a dotted `skillmix` module (a package's ``__init__.py``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin)


@cache
def _package_root() -> Path:
    return module_path(PACKAGE).parent


@cache
def _is_module(name: str) -> bool:
    """Whether the dotted name is a module or package of the library (not, e.g., a function)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return False
    base = _package_root().joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _with_parents(module: str) -> list[str]:
    """The module and every package above it (importing it runs their ``__init__``)."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in `body` and, recursively, in the bodies of compound statements (imports
    are statements, so the expressions in between need not be visited)."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def _imports_in(source: str, package: str) -> set[str]:
    """The library modules a Python source imports; `package` resolves relative imports."""
    found: set[str] = set()
    for node in _statements(ast.parse(source).body):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]).rstrip(".")
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            parts = name.split(".")
            # the longest prefix that is a module: `skillmix.data.sources.load_source` -> its package
            for n in range(len(parts), 0, -1):
                if _is_module(".".join(parts[:n])):
                    found.update(_with_parents(".".join(parts[:n])))
                    break
    return found


@cache
def direct_imports(module: str) -> frozenset[str]:
    """The library modules that `module`'s own source imports (with their packages)."""
    path = module_path(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return frozenset(_imports_in(path.read_text(encoding="utf-8"), package) - {module})


def module_closure(*modules: str) -> list[str]:
    """`modules` (dotted, with their packages) and every library module they import, directly
    or not, sorted; :data:`NOT_RESULTS` and what only they import are left out."""
    todo = [m for module in modules for m in _with_parents(module)]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m not in seen and m not in NOT_RESULTS:
            seen.add(m)
            todo.extend(direct_imports(m))
    return sorted(seen)


def _targets_in(source: str) -> set[str]:
    """The library modules of the job functions a script names as ``skillmix.module:function``
    strings (:func:`skillmix.infra.warm.run_job` imports them when the job runs)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _TARGET.fullmatch(node.value)
            if match and _is_module(match.group(1)):
                found.add(match.group(1))
    return found


def script_modules(script: str | os.PathLike) -> list[str]:
    """The library modules a workflow script runs: its imports, the modules of the job functions
    it names, and all they import, sorted."""
    source = Path(script).read_text(encoding="utf-8")
    return module_closure(*_imports_in(source, PACKAGE), *_targets_in(source))


@cache
def _module_digest(module: str) -> bytes:
    """The hash of one module's name and source (read once per process)."""
    return hashlib.sha256(module.encode() + b"\0" + module_path(module).read_bytes()).digest()


def _digest(modules: list[str]) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update(_module_digest(module))
    return digest.hexdigest()[:16]


@cache
def _script_version(script: str) -> str:
    return _digest(script_modules(script))


def script_code_version(script: str | os.PathLike) -> str:
    """A short hash of the source of every library module `script` runs (see the module doc)."""
    return _script_version(str(Path(script).resolve()))


def code_version(*modules: str) -> str:
    """A short hash of the named library modules (``"engine.training"`` or
    ``"skillmix.engine.training"``) and of all they import."""
    dotted = [m if m.startswith(f"{PACKAGE}.") or m == PACKAGE else f"{PACKAGE}.{m}" for m in modules]
    return _digest(module_closure(*dotted))


def method_code_version(script: str | os.PathLike, kind: str, name: str) -> str:
    """The code version of a method's job: its script's library code and the module that implements
    the method (:mod:`skillmix.infra.registry`), so that an edit to one method's module re-runs that
    method's jobs and no other method's."""
    from skillmix.infra import registry

    return f"{script_code_version(script)}+{code_version(*registry.method_modules(kind, name))}"
