"""The layering the design asks for, read from the source: `shared/` imports no backend package
(backends and their trainers register by name), and inference imports no training code."""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / "shared"
BACKENDS = ("functional_impl", "haiku_impl", "keras_impl")
INFERENCE = ["api.py", "request.py", "generation_windows.py", "weights"]


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def _offenders(paths: list[Path], bad) -> dict[str, list[str]]:
    found = {str(p.relative_to(SHARED)): sorted(filter(bad, _imports(p))) for p in paths}
    return {path: modules for path, modules in found.items() if modules}


def test_shared_imports_no_backend_package():
    paths = sorted(SHARED.rglob("*.py"))
    assert _offenders(paths, lambda module: module.split(".")[0] in BACKENDS) == {}


def test_inference_imports_no_training_code():
    paths = [
        p for name in INFERENCE for p in sorted((SHARED / name).glob("**/*.py")) or [SHARED / name]
    ]
    assert len(paths) > len(INFERENCE)
    assert _offenders(paths, lambda module: module.startswith("shared.training")) == {}


def test_the_numpy_adamw_takes_only_the_hyperparameters_from_the_project():
    """The reference the optimizer is held to (`tests/support/adamw.py`) shares no code with it."""
    reference = Path(__file__).parent / "support" / "adamw.py"
    allowed = {"__future__", "math", "collections.abc", "typing", "numpy", "shared.training.config"}
    assert _imports(reference) <= allowed
