"""Code versions: content hashes of library modules, passed to rules as parameters.

Snakemake re-runs a job when its script or params change, but not when a module the script
imports changes; a hash of the modules a rule uses, given as a param, closes that gap.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def module_path(module: str) -> Path:
    """The source file of `skillmix.<module>` (a package's __init__.py covers its folder)."""
    spec = importlib.util.find_spec(f"skillmix.{module}")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"skillmix.{module}")
    return Path(spec.origin)


def code_version(*modules: str) -> str:
    """A short hash of the source of the named `skillmix` modules (packages: every .py inside)."""
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        path = module_path(module)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
