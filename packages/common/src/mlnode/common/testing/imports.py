"""Walks what a module imports, transitively, without running it: the engine boundary's check."""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlnode.common.engine_safe import ENGINE_PACKAGES, ENGINE_SAFE_COMMON, ENGINE_THIRD_PARTY


def _source(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def imported_names(module: str, path: Path) -> set[str]:
    """Modules `path` (the source of `module`) imports anywhere, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            for alias in node.names:
                if base.startswith("mlnode.") and _is_module(f"{base}.{alias.name}"):
                    found.add(f"{base}.{alias.name}")
    return found


def _engine_side(name: str) -> bool:
    return name in ENGINE_SAFE_COMMON or any(
        name == p or name.startswith(f"{p}.") for p in ENGINE_PACKAGES
    )


@dataclass
class EngineImports:
    """The project's modules an engine loads from some entry modules, and what crosses the line."""

    reached: set[str] = field(default_factory=set)
    #: Importing module → the imports an engine's interpreter must not need.
    violations: dict[str, set[str]] = field(default_factory=dict)


def walk_engine_imports(entry_modules: Iterable[str]) -> EngineImports:
    """Follow the project's imports from `entry_modules` through the engine-side modules.

    A violation is a project module that is not engine-side (`ENGINE_PACKAGES`,
    `ENGINE_SAFE_COMMON`), or a third-party package outside `ENGINE_THIRD_PARTY`.
    """
    walk = EngineImports()
    violations, seen = walk.violations, walk.reached
    pending = list(entry_modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _source(module)
        if path is None:
            continue
        for name in imported_names(module, path):
            root = name.partition(".")[0]
            if root == "mlnode" and name != "mlnode":
                if _engine_side(name):
                    pending.append(name)
                elif name not in ("mlnode.common", "mlnode.pow", "mlnode.infer"):
                    violations.setdefault(module, set()).add(name)
            elif root != "mlnode" and root not in sys.stdlib_module_names:
                if root not in ENGINE_THIRD_PARTY and root != "__future__":
                    violations.setdefault(module, set()).add(name)
    return walk
