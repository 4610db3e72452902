"""The layering rule: only the FedML adapter layer (and what drives it) imports fedml."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedml_prr"
PURE = ("core", "models", "data", "training", "algorithms")
ALLOWED = {"fedml_adapter"}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_only_the_adapter_layer_imports_fedml():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ALLOWED:
            continue
        if any(m == "fedml" or m.startswith("fedml.") for m in imported_modules(path)):
            offenders.append(str(rel))
    assert offenders == []


def test_pure_layers_do_not_import_upper_layers():
    upper = ("fedml_adapter", "runtime", "cli", "api")
    offenders = []
    for layer in PURE:
        for path in (PACKAGE / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    parts = node.module.split(".")
                    if any(p in upper for p in parts):
                        offenders.append(f"{path.relative_to(PACKAGE)} imports {node.module}")
    assert offenders == []


CORE_ALLOWED = {"torch", "math", "enum", "typing", "dataclasses", "__future__"}
#: core/metrics.py wraps scikit-learn's metrics (numpy arrays in, warnings filtered).
METRICS_ALLOWED = CORE_ALLOWED | {"numpy", "sklearn", "warnings"}


def test_core_imports_only_torch_and_itself():
    for path in (PACKAGE / "core").rglob("*.py"):
        allowed = METRICS_ALLOWED if path.name == "metrics.py" else CORE_ALLOWED
        for module in imported_modules(path):
            assert module.split(".")[0] in allowed, (path, module)


def test_files_module_needs_only_the_standard_library_and_torch():
    stdlib = set(sys.stdlib_module_names)
    for module in imported_modules(PACKAGE / "files.py"):
        assert module.split(".")[0] in stdlib | {"torch"}, module
