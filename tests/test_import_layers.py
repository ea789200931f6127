"""Imports flow one way (README "Layout"): core -> data, models -> methods -> engine. A module may import
its own layer and the layers before it, never a later one, and not lazily inside a function either."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: each package and the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "methods": {"core", "data", "models"},
    "engine": {"core", "data", "models", "methods"},
}


def imported_packages(path: str) -> dict[str, int]:
    """Each project package a module imports (at any depth: module level or inside a function) -> first line."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(open(path).read(), filename=path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in ALLOWED:
                found.setdefault(top, node.lineno)
    return found


def _modules(package: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(os.path.join(ROOT, package))
                  for f in files if f.endswith(".py"))


@pytest.mark.parametrize("package", list(ALLOWED))
def test_a_package_imports_only_earlier_layers(package):
    wrong = [f"{os.path.relpath(path, ROOT)}:{line} imports {top}"
             for path in _modules(package) for top, line in imported_packages(path).items()
             if top != package and top not in ALLOWED[package]]
    assert not wrong, "imports against the layer order core -> data, models -> methods -> engine:\n" + "\n".join(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import torch\n\ndef f():\n    from engine.runner import run\n    import methods.base\n")
    assert imported_packages(str(module)) == {"engine": 4, "methods": 5}
