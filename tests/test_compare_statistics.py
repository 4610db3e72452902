"""``compare``'s statistics that resolve: paired differences to a reference, the convergence check,
per-client balanced accuracy, and the report details (title, colours, bands, progress)."""

import csv
import io
import json
import math

import pytest
from fakeruns import write_run

from fedml_prr import api
from fedml_prr.compare import (check_curve, choose_reference, collect, describe_data, format_markdown,
                               paired_difference, run_folder, write_report)
from fedml_prr.compare.convergence import TAIL_FRACTION, TAIL_MIN_ROUNDS, TOLERANCE, tail_length
from fedml_prr.compare.matrix import PlannedRun, run_matrix
from fedml_prr.compare.plots import algorithm_styles, clipped_band
from fedml_prr.compare.statistics import SeedStat

SEEDS = (0, 1, 2, 3, 4)


# ------------------------------------------------------------------------------------------ paired
def test_identical_methods_differ_by_exactly_zero():
    values = {s: 0.3 + 0.1 * s for s in SEEDS}
    d = paired_difference(values, dict(values))
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
    assert d.p_value == 1.0 and not d.resolved and d.n == 5


def test_a_hand_computed_t_interval_on_five_seeds():
    reference = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.70, 4: 0.40}
    diffs = {0: 0.01, 1: 0.03, 2: -0.02, 3: 0.04, 4: 0.02}
    d = paired_difference({s: reference[s] + diffs[s] for s in SEEDS}, reference)
    # mean 0.016, sample std sqrt(0.00212 / 4) = 0.0230217, se = 0.0102956, t(0.975, 4 df) = 2.7764451
    assert d.mean == pytest.approx(0.016)
    assert d.low == pytest.approx(0.016 - 2.7764451052 * 0.0102956301, abs=1e-8)
    assert d.high == pytest.approx(0.044585252, abs=1e-8)
    assert d.p_value == pytest.approx(0.19514, abs=1e-4)  # t = 1.554 on 4 df, two-sided
    assert not d.resolved  # the interval holds 0


def test_the_sign_follows_method_minus_reference_and_a_clear_gap_is_resolved():
    reference = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.70, 4: 0.40}
    worse = paired_difference({s: v - 0.05 - 0.002 * s for s, v in reference.items()}, reference)
    better = paired_difference(reference, {s: v - 0.05 - 0.002 * s for s, v in reference.items()})
    assert worse.mean == pytest.approx(-0.054) and worse.high < 0 and worse.resolved
    assert better.mean == pytest.approx(0.054) and better.low > 0 and better.resolved
    assert (worse.low, worse.high) == pytest.approx((-better.high, -better.low))
    assert worse.p_value == pytest.approx(better.p_value) and worse.p_value < 0.05


def test_fewer_than_two_paired_seeds_gives_no_estimate_and_says_why():
    d = paired_difference({0: 0.5, 1: float("nan"), 2: 0.7}, {0: 0.4, 1: 0.5, 3: 0.2})
    assert d.seeds == (0,) and math.isnan(d.mean) and math.isnan(d.low) and math.isnan(d.p_value)
    assert not d.resolved and "1 paired seed" in d.note


def test_the_reference_is_prr_by_default_else_the_first_and_must_be_compared():
    assert choose_reference({"FedAvg": None, "PRR": None}) == "PRR"
    assert choose_reference({"FedAvg": None, "Local": None}) == "FedAvg"
    assert choose_reference({"FedAvg": None, "Local": None}, "local") == "Local"
    with pytest.raises(ValueError, match="FedBN is not one of the compared algorithms"):
        choose_reference({"FedAvg": None}, "FedBN")


# ------------------------------------------------------------------------------------- convergence
def test_a_curve_still_rising_is_flagged_and_a_flat_one_is_not():
    rising = check_curve({r: 0.05 * r for r in range(10)})
    assert rising.tail_rounds == 2 and rising.best == pytest.approx(0.45)
    assert rising.tail_mean == pytest.approx(0.425) and rising.gap == pytest.approx(0.025) and not rising.flattened
    flat = check_curve({r: min(0.1 * r, 0.6) + (0.004 if r % 2 else 0.0) for r in range(10)})
    assert flat.flattened and flat.gap <= TOLERANCE
    peaked = check_curve({0: 0.2, 1: 0.8, 2: 0.5, 3: 0.5})  # fell after an early peak
    assert not peaked.flattened and peaked.best_round == 1


def test_the_tail_is_the_last_fifth_of_rounds_and_at_least_two():
    assert (TAIL_FRACTION, TAIL_MIN_ROUNDS, TOLERANCE) == (0.2, 2, 0.01)
    assert [tail_length(t) for t in (1, 2, 5, 10, 11, 15, 50)] == [1, 2, 2, 2, 3, 3, 10]
    # exactly one point (0.01) below the best passes, just more does not
    assert check_curve({0: 0.50, 1: 0.60, 2: 0.59, 3: 0.59}).flattened
    assert not check_curve({0: 0.50, 1: 0.60, 2: 0.589, 3: 0.589}).flattened
    nan_round = check_curve({0: 0.5, 1: float("nan"), 2: 0.5})
    assert nan_round.rounds == 2 and nan_round.flattened


# ----------------------------------------------------------------------------------------- report
def five_seed_matrix(out):
    """PRR flat and best; FedAvg 4.2 points below on average seed by seed (bacc 6.4 below), still rising
    for seed 2 (selected at its last round, the others at round 1); Local has a single seed."""
    for seed in SEEDS:
        base = 0.5 + 0.02 * seed
        write_run(run_folder(out, "PRR", seed), "PRR", seed, test=[[base - 0.1] * 2, [base] * 2, [base] * 2],
                  valid=[0.3, 0.6, 0.6], dataset="derm_synthetic",
                  dataset_options={"scale": 0.1, "partition": "dirichlet", "alpha": 0.3, "clients": 2})
        rising = seed == 2
        f1 = base - 0.04 - 0.001 * seed
        write_run(run_folder(out, "FedAvg", seed), "FedAvg", seed,
                  test=[[f1 - 0.1] * 2, [f1 - 0.05 if rising else f1] * 2, [f1] * 2],
                  valid=[0.3, 0.45, 0.6] if rising else [0.3, 0.6, 0.6],
                  bacc=[[0.0] * 2, [0.0] * 2, [f1 - 0.02 - 0.001 * seed] * 2] if rising else
                  [[0.0] * 2, [f1 - 0.02 - 0.001 * seed] * 2, [0.0] * 2], retrogress=-0.1)
    write_run(run_folder(out, "Local", 0), "Local", 0, test=[[0.3, 0.3]], valid=[0.3])


def test_report_writes_paired_tables_convergence_and_per_client_balanced_accuracy(tmp_path):
    out = tmp_path / "cmp"
    five_seed_matrix(out)
    report = write_report(out, ["PRR", "FedAvg"], SEEDS)

    assert report.reference == "PRR"
    f1 = {d.metric: d for d in report.paired}
    assert f1["macro_f1"].method == "FedAvg" and f1["macro_f1"].n == 5
    assert f1["macro_f1"].mean == pytest.approx(-0.042) and f1["macro_f1"].resolved
    assert f1["balanced_accuracy"].mean == pytest.approx(-0.064) and f1["balanced_accuracy"].resolved

    rows = list(csv.DictReader((out / "paired.csv").open()))
    assert [(r["method"], r["metric"]) for r in rows] == [("FedAvg", "macro_f1"), ("FedAvg", "balanced_accuracy")]
    assert float(rows[0]["mean_diff_points"]) == pytest.approx(-4.2) and rows[0]["resolved"] == "true"
    document = json.loads((out / "paired.json").read_text())
    assert document["reference"] == "PRR" and "ttest_rel" in document["test"]
    assert document["differences"][1]["ci_high"] < 0
    assert "## Paired differences to PRR" in report.table_markdown and "| FedAvg | 5 | -4.2 |" in report.table_markdown

    checks = {(c.algorithm, c.seed): c for c in report.convergence}
    assert [k for k, c in checks.items() if not c.flattened] == [("FedAvg", 2)]
    assert "warning: FedAvg seed 2 has not flattened" in report.convergence_text
    assert "9 of 10 runs flattened" in report.convergence_text
    assert "9 of 10 runs flattened" in (out / "summary.txt").read_text()
    convergence = list(csv.DictReader((out / "convergence.csv").open()))
    assert len(convergence) == 10 and convergence[7]["flattened"] == "false"
    assert float(convergence[7]["gap_points"]) == pytest.approx(7.5)
    assert json.loads((out / "convergence.json").read_text())["tolerance"] == TOLERANCE

    title = report.table_markdown.splitlines()[0]
    assert title == "# PRR vs FedAvg on derm_synthetic (scale 0.1, dirichlet alpha 0.3, 2 clients)"
    header = next(line for line in report.table_markdown.splitlines() if line.startswith("| Algorithm"))
    assert header.endswith("| F1 A | F1 B | bacc A | bacc B |")
    table = {r["algorithm"]: r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    assert float(table["FedAvg"]["balanced_accuracy_A_mean_pct"]) == pytest.approx(
        100 * (sum(0.5 + 0.02 * s - 0.04 - 0.002 * s - 0.02 for s in SEEDS) / 5))
    assert (out / "paired.png").read_bytes()[:4] == b"\x89PNG"


def test_a_method_with_one_seed_gets_a_dash_and_a_note(tmp_path):
    out = tmp_path / "cmp"
    five_seed_matrix(out)
    report = write_report(out, ["PRR", "Local"], [0])
    row = next(line for line in report.paired_markdown.splitlines() if line.startswith("| Local"))
    assert row.startswith("| Local | 1 | - | - | - | - |")
    assert "- Local, Macro-F1: 1 paired seed: at least 2 are needed." in report.paired_markdown
    assert (out / "paired.png").is_file()


def test_the_title_names_the_data_and_the_options_that_define_the_federation():
    assert describe_data("derm_synthetic", {}) == "derm_synthetic (scale 0.25)"  # the dataset's default shown
    assert describe_data("image_folder", {"root": "/data/hospitals/", "workers": 4}) == "image_folder (root hospitals)"
    assert describe_data("derm_synthetic", {"partition": "dirichlet", "alpha": 0.3, "clients": 6,
                                            "partition_seed": 1}) == \
        "derm_synthetic (scale 0.25, dirichlet alpha 0.3 partition seed 1, 6 clients)"


def test_markdown_without_config_names_the_dataset(tmp_path):
    write_run(run_folder(tmp_path, "A", 0), "A", 0, test=[[0.5, 0.5]], valid=[0.5], dataset="toy")
    (run_folder(tmp_path, "A", 0) / "config.resolved.json").unlink()
    assert format_markdown(collect(tmp_path, ["A"], [0])).startswith("# A on toy\n")


# ---------------------------------------------------------------------------------------- figures
def test_twenty_algorithms_get_twenty_colours_and_markers_fixed_by_name():
    from fedml_prr.algorithms import ALGORITHMS

    names = ALGORITHMS.names() + ["Mine", "Yours"]
    assert len(names) >= 20
    styles = algorithm_styles(names)
    assert len({s.colour for s in styles.values()}) == len(names) == len({s.marker for s in styles.values()})
    # a registered algorithm keeps its style in any comparison, whatever the order
    assert algorithm_styles(["PRR", "FedAvg"])["PRR"] == styles["PRR"] == algorithm_styles(list(reversed(names)))["PRR"]
    many = algorithm_styles([f"algo{i}" for i in range(45)])  # past the palette: (colour, marker) still unique
    assert len({(s.colour, s.marker) for s in many.values()}) == 45


def test_std_bands_are_clipped_to_the_metrics_range():
    curve = [SeedStat(0.05, 0.2, 3), SeedStat(0.95, 0.2, 3), SeedStat(0.5, float("nan"), 1)]
    low, high = clipped_band(curve, (0.0, 100.0))
    assert low == pytest.approx([0.0, 75.0, 50.0]) and high == pytest.approx([25.0, 100.0, 50.0])
    low, high = clipped_band([SeedStat(-0.9, 0.3, 3)], (-100.0, 100.0))
    assert low == pytest.approx([-100.0]) and high == pytest.approx([-60.0])


# --------------------------------------------------------------------------------------- progress
TINY = {"data_args": {"dataset": "derm_synthetic"}, "train_args": {"comm_round": 2, "epochs": 1},
        "prr_args": {"prr_image_size": 32, "prr_dataset_options": {"scale": 0.03}}}


def planned(folder, seed, action, tracking=False):
    config = api.make_config({**TINY, "tracking_args": {"enable_tracking": tracking}},
                             overrides={"random_seed": seed, "prr_results_dir": str(folder)})
    return PlannedRun("PRR", seed, config, folder, action)


def test_the_progress_bar_counts_only_the_runs_to_do(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(api, "run", lambda config, **kw: trained.append(config.seed))
    plan = [planned(tmp_path / str(s), s, "skip" if s < 3 else "start") for s in range(5)]
    run_matrix(plan, progress=True)
    err = capsys.readouterr().err
    assert trained == [3, 4]
    assert "2/2" in err and "/5" not in err and "3 finished earlier, skipped" in err
    run_matrix(plan[:3], progress=True)  # nothing to do: no bar at all
    assert "compare" not in capsys.readouterr().err


def test_a_finished_run_reused_with_tracking_on_gets_its_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = write_run(tmp_path / "run", "PRR", 0, test=[[0.25, 0.5], [0.5, 0.75]], valid=[0.5, 0.5])
    run_matrix([planned(folder, 0, "skip", tracking=False)])
    assert not (folder / "tensorboard").exists()
    run_matrix([planned(folder, 0, "skip", tracking=True)])
    events = EventAccumulator(str(folder / "tensorboard" / "B"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("test/macro_f1")] == [(0, 0.5), (1, 0.75)]
