"""The CUDA path (marker ``cuda``; skipped without a GPU): every algorithm on the device ends a
round where the CPU does, grouped and per-slot convolutions agree, bf16 autocast trains, and the
batched engine's training step never waits for the device.  The checks and their tolerances
live in tests/device_checks.py, which run_scripts/gpu_check.py also runs without pytest."""

import pytest
import torch

import device_checks

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", list(device_checks.CHECKS))
def test_cuda_path(tmp_path, name):
    device_checks.CHECKS[name]("cuda", tmp_path)


def test_compiled_engine_matches_eager(tmp_path):
    device_checks.check_compile_matches_eager("cuda", tmp_path)
