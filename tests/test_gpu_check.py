"""run_scripts/gpu_check.py's own bookkeeping: the whole-run estimate from the rounds a time budget
allowed, and the budget option (its smoke run is in tests/test_layering.py)."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run_scripts"))
import gpu_check  # noqa: E402


def test_the_whole_run_is_extrapolated_from_the_rounds_done():
    # the first round carries the warm-up (10 s); later rounds took 4, 5 and 4 s: median 4 s
    estimate = gpu_check.estimate_run({"rounds": 50, "round_end_s": [10.0, 14.0, 19.0, 23.0]})
    assert estimate == {"rounds_done": 4, "first_round_s": 10.0, "median_round_s": 4.0, "estimated_s": 10.0 + 49 * 4.0}


def test_a_finished_run_is_measured_and_one_round_alone_is_repeated():
    finished = {"rounds": 50, "round_end_s": [5.0 + i for i in range(50)], "finished": True, "wall_s": 56.5}
    assert gpu_check.estimate_run(finished) == {"rounds_done": 50, "measured_s": 56.5, "estimated_s": 56.5}
    assert gpu_check.estimate_run({"rounds": 50, "round_end_s": [7.0]})["estimated_s"] == 350.0
    assert gpu_check.estimate_run({"rounds": 50, "round_end_s": []}) == {}


def test_budgets_name_a_part():
    assert gpu_check.budget("prr=200") == {"prr": 200.0}
    with pytest.raises(argparse.ArgumentTypeError, match="PART=SECONDS with PART one of checks, engine, prr, compile"):
        gpu_check.budget("training=10")
