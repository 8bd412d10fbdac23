"""Every third-party module a package's source imports is one of its declared dependencies.

A package installed alone (`pip install mlnode-infer`) must bring what it imports; an import
that only works because a sibling package pulled the distribution in breaks that install.
Test helpers (a `testing` module or package) may also import the dev requirements, and the
engine-side modules the engine's own interpreter provides (`vllm`).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
PACKAGES = ("common", "pow", "train", "infer", "fuse", "api")
#: Imported only inside the vLLM engine's interpreter, which is built from vllm itself.
ENGINE_PROVIDED = frozenset({"vllm"})


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(lines: list[str]) -> set[str]:
    """The distribution names of requirement strings (versions, extras and markers dropped)."""
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalise(re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0]))
    return names


def declared(package: str) -> set[str]:
    """What `packages/<package>/pyproject.toml` declares."""
    project = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    return requirement_names(project["project"].get("dependencies", []))


def dev_requirements() -> set[str]:
    """The test tooling every checkout installs (`requirements-dev.txt`)."""
    return requirement_names((ROOT / "requirements-dev.txt").read_text().splitlines())


def third_party_imports(source: Path) -> Iterator[str]:
    """The root module of every absolute import in `source` outside the stdlib and mlnode."""
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            root = module.split(".", 1)[0]
            if root != "mlnode" and root not in sys.stdlib_module_names:
                yield root


def is_test_helper(source: Path) -> bool:
    """Whether `source` is a `testing` module or lies in a `testing` package."""
    return source.stem == "testing" or "testing" in source.parts


def undeclared(package: str) -> list[str]:
    """`file: root (distributions)` for each import `package` does not declare."""
    src = ROOT / "packages" / package / "src"
    own, dev = declared(package), dev_requirements()
    distributions = packages_distributions()
    missing = []
    for source in sorted(src.rglob("*.py")):
        if "_gen" in source.parts:
            continue
        allowed = own | dev if is_test_helper(source) else own
        for root in sorted(set(third_party_imports(source)) - ENGINE_PROVIDED):
            dists = {normalise(d) for d in distributions.get(root, [])}
            if not dists & allowed:
                missing.append(f"{source.relative_to(src)}: {root} ({', '.join(sorted(dists))})")
    return missing


@pytest.mark.parametrize("package", PACKAGES)
def test_every_imported_distribution_is_declared(package: str) -> None:
    assert undeclared(package) == []


def test_an_undeclared_import_is_found(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("import os\nimport yaml\nfrom mlnode.common import errors\n")

    assert list(third_party_imports(source)) == ["yaml"]
    assert "pyyaml" not in declared("infer")
    assert "yaml" in packages_distributions()
