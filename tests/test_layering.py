"""The layering rule, over the whole package and function-level imports too: every import points to
the importer's own layer or a lower one, the module graph has no cycle, and only the FedML adapter
layer imports fedml (layers: tests/import_graph.py LAYERS, lowest first); and the single-process
path really runs where fedml, nibabel, cryptography and tensorboard cannot be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

from import_graph import LAYERS, cycles, edges, external_imports, layer_of, modules


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_points_to_a_higher_layer():
    upward = [f"{a}:{line} imports {b} ({LAYERS[layer_of(b)][0]} is above {LAYERS[layer_of(a)][0]})"
              for a, b, line in edges() if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_module_graph_has_no_cycle():
    assert cycles() == []


def test_only_the_adapter_layer_imports_fedml():
    offenders = [f"{a}:{line} imports {b}" for a, b, line in external_imports()
                 if (b == "fedml" or b.startswith("fedml.")) and not a.startswith("fedml_prr.fedml_adapter")]
    assert offenders == []


def test_the_single_process_path_needs_no_fedml():
    # what a one-process run imports, transitively, must not reach the adapter layer (GPU machines
    # without fedml run it; fedml stays required for MPI, gRPC and install())
    graph = {}
    for a, b, _ in edges():
        graph.setdefault(a, set()).add(b)
    seen, todo = set(), ["fedml_prr.runtime.sp"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    assert not [m for m in seen if m.startswith("fedml_prr.fedml_adapter")]


CORE_ALLOWED = {"torch", "math", "enum", "typing", "dataclasses", "__future__"}
#: core/metrics.py wraps scikit-learn's metrics (numpy arrays in, warnings filtered).
METRICS_ALLOWED = CORE_ALLOWED | {"numpy", "sklearn", "warnings"}


def test_core_imports_only_torch_and_itself():
    offenders = [f"{a}:{line} imports {b}" for a, b, line in external_imports() if a.startswith("fedml_prr.core")
                 and b.split(".")[0] not in (METRICS_ALLOWED if a == "fedml_prr.core.metrics" else CORE_ALLOWED)]
    assert offenders == []


def test_files_module_needs_only_the_standard_library_and_torch():
    stdlib = set(sys.stdlib_module_names)
    offenders = [b for a, b, _ in external_imports() if a == "fedml_prr.files" and b.split(".")[0] not in stdlib | {"torch"}]
    assert offenders == []


ROOT = Path(__file__).resolve().parents[1]
WITHOUT = Path(__file__).resolve().parent / "without_optional_packages"  # its sitecustomize blocks them


def test_gpu_check_smoke_runs_without_fedml_nibabel_cryptography_tensorboard(tmp_path):
    # what a bare GPU machine has: torch and friends, not these packages, and no install of ours
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(WITHOUT), str(ROOT)]), OMP_NUM_THREADS="1")
    for name in ("fedml", "nibabel", "cryptography", "tensorboard"):
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "blocked" in probe.stderr, name
    done = subprocess.run([sys.executable, "run_scripts/gpu_check.py", "--device", "cpu", "--smoke",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    parts = summary["parts"]
    assert [parts[p]["status"] for p in ("checks", "engine", "prr", "compile")] == ["ok", "ok", "ok", "skipped"]
    assert {c["status"] for c in parts["checks"]["result"].values()} == {"passed"}
    variants = parts["engine"]["result"]["variants"]
    assert set(variants) == {"loop", "batched", "batched-bf16"}
    assert all(v["epoch_s"] > 0 and v["tflop_per_s"] > 0 for v in variants.values())
    ends = parts["prr"]["result"]["round_end_s"]
    assert len(ends) == 2 and 0 < ends[0] < ends[1] <= parts["prr"]["result"]["wall_s"]
    assert summary["prr_run_estimate"]["measured_s"] == parts["prr"]["result"]["wall_s"]
    assert "PRR 2 x 5 (batched-bf16): 2 rounds done" in done.stdout
    assert "check step_stays_on_device: passed" in done.stdout
