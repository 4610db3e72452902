"""``fedml-prr compare``: statistics over seeds, resuming a matrix, and one real end-to-end call."""

import csv
import io
import json
import math
import statistics

import pytest
import torch

from fedml_prr import api
from fedml_prr.cli import main
from fedml_prr.compare import (best_per_metric, collect, compare, format_best, format_csv, format_markdown,
                               run_folder, seed_stat)
from fedml_prr.config import ConfigError
from fedml_prr.training.results import ResultsStore

TINY_YAML = """
data_args: {dataset: derm_synthetic}
model_args: {model: vgg16_slim}
train_args: {federated_optimizer: PRR, comm_round: 2, epochs: 1, batch_size: 8}
tracking_args: {enable_tracking: true}
prr_args:
  prr_image_size: 32
  prr_dataset_options: {scale: 0.03}
  prr_model_options: {width: 0.25}
  prr_threads: 1
  prr_results_dir: %s
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML % (tmp_path / "results"))
    threads = torch.get_num_threads()
    yield path
    torch.set_num_threads(threads)  # prr_threads is process-wide; leave other tests as they were


def metric_block(value, n=10):
    """Every metric equal to ``value`` except accuracy = value + 0.2 and AUC = value + 0.1."""
    return {"accuracy": value + 0.2, "balanced_accuracy": value, "macro_f1": value, "auc": value + 0.1, "n": n}


def write_run(folder, algorithm, seed, *, test_f1, valid_f1, retrogress, config=None):
    """A finished run written by the real ResultsStore from hand-made records.

    ``test_f1[r][c]``, ``valid_f1[r]`` (one value for all clients) and ``retrogress[r][c]``.
    """
    store = ResultsStore(folder, total_rounds=len(test_f1), selection_fraction=0.0)
    store.start_fresh(config.to_dict() if config is not None else {}, overwrite=True)
    for r, row in enumerate(test_f1):
        records = [{"round": r, "silo": c, "client": "AB"[c], "valid": metric_block(valid_f1[r]),
                    "test": metric_block(v), "test_before_receive": metric_block(v - retrogress[r][c]),
                    "retrogress": retrogress[r][c]} for c, v in enumerate(row)]
        store.add_round(r, records, {})
    store.summary({"algorithm": algorithm, "dataset": "toy", "seed": seed, "wall_time_s": 1.0})


# Two rounds, two clients.  The validation score picks round 1 for seeds 0 and 1, round 0 for seed 2.
# Selected-round test macro-F1 (A, B): seed 0 (0.4, 0.6), seed 1 (0.5, 0.7), seed 2 (0.6, 0.8).
GOOD = {0: {"test_f1": [[0.0, 0.0], [0.4, 0.6]], "valid_f1": [0.1, 0.9], "retrogress": [[0.0, 0.0], [0.0, 0.0]]},
        1: {"test_f1": [[0.1, 0.1], [0.5, 0.7]], "valid_f1": [0.2, 0.8], "retrogress": [[0.0, 0.0], [0.0, 0.0]]},
        2: {"test_f1": [[0.6, 0.8], [0.0, 0.0]], "valid_f1": [0.9, 0.3], "retrogress": [[0.0, 0.0], [0.0, 0.0]]}}
# The other algorithm: 0.05 below on every selected value, retrogress -0.1 / -0.3 / -0.2 per record.
WORSE_RETROGRESS = {0: -0.1, 1: -0.3, 2: -0.2}
WORSE = {s: {"test_f1": [[v - 0.05 if v else 0.0 for v in row] for row in spec["test_f1"]],
             "valid_f1": spec["valid_f1"],
             "retrogress": [[WORSE_RETROGRESS[s]] * 2] * 2}
         for s, spec in GOOD.items()}


@pytest.fixture
def fake_matrix(tmp_path):
    out = tmp_path / "cmp"
    for algorithm, specs in (("Good", GOOD), ("Worse", WORSE)):
        for seed, spec in specs.items():
            write_run(run_folder(out, algorithm, seed), algorithm, seed, **spec)
    return out


def test_table_values_are_the_seed_statistics_of_the_runs(fake_matrix):
    stats = collect(fake_matrix, ["Good", "Worse"], [0, 1, 2])
    good, worse = stats["Good"], stats["Worse"]

    # client means at each seed's selected round: 0.5, 0.6, 0.7
    assert good.selected_rounds == (1, 1, 0)
    assert good.metrics["macro_f1"].mean == pytest.approx(0.6)
    assert good.metrics["macro_f1"].std == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))
    assert good.metrics["accuracy"].mean == pytest.approx(0.8)
    assert good.metrics["auc"].mean == pytest.approx(0.7)
    assert good.client_primary["A"].mean == pytest.approx(0.5)
    assert good.client_primary["B"].std == pytest.approx(0.1)
    assert worse.metrics["macro_f1"].mean == pytest.approx(0.55)
    # retrogress of the runs: -0.1, -0.3, -0.2
    assert worse.metrics["retrogress"].mean == pytest.approx(-0.2)
    assert worse.metrics["retrogress"].std == pytest.approx(0.1)
    assert good.metrics["retrogress"].mean == 0.0
    # per-round curve: client mean of each round's test macro-F1, then over seeds
    assert good.rounds == (0, 1)
    assert good.curve_primary[0].mean == pytest.approx(statistics.mean([0.0, 0.1, 0.7]))
    assert good.curve_retrogress[1].mean == 0.0

    markdown = format_markdown(stats)
    rows = [line for line in markdown.splitlines() if line.startswith("| Good") or line.startswith("| Worse")]
    assert rows[0].split(" | ")[:7] == ["| Good", "3", "80.0 ± 10.0", "60.0 ± 10.0", "60.0 ± 10.0", "70.0 ± 10.0",
                                        "0.0 ± 0.0"]
    assert rows[1].split(" | ")[6] == "-20.0 ± 10.0"
    assert rows[0].endswith("| 50.0 ± 10.0 | 70.0 ± 10.0 |")  # F1 A, F1 B

    table = list(csv.DictReader(io.StringIO(format_csv(stats))))
    assert [r["algorithm"] for r in table] == ["Good", "Worse"]
    assert table[1]["n_seeds"] == "3" and table[1]["seeds"] == "0 1 2"
    assert float(table[1]["macro_f1_mean_pct"]) == pytest.approx(55.0)
    assert float(table[1]["macro_f1_B_std_pct"]) == pytest.approx(10.0)


def test_best_per_metric_names_the_winner_and_its_margin(fake_matrix):
    stats = collect(fake_matrix, ["Worse", "Good"], [0, 1, 2])
    best = {b.metric: b for b in best_per_metric(stats)}
    assert best["macro_f1"].algorithm == "Good" and best["macro_f1"].runner_up == "Worse"
    assert best["macro_f1"].margin_points == pytest.approx(5.0)
    assert best["retrogress"].algorithm == "Good"  # 0 beats -20 points: highest is best
    assert best["retrogress"].margin_points == pytest.approx(20.0)
    text = format_best(stats)
    assert "Macro-F1       Good 60.0  +5.0 over Worse 55.0  (within one seed std)" in text
    assert "Retrogress     Good 0.0  +20.0 over Worse -20.0\n" in text


def test_seed_statistics_leave_out_nan_and_a_single_seed_has_no_std():
    assert seed_stat([0.2, float("nan"), 0.4]).n == 2
    assert seed_stat([0.2, float("nan"), 0.4]).mean == pytest.approx(0.3)
    single = seed_stat([0.25])
    assert single.mean == 0.25 and math.isnan(single.std)
    assert math.isnan(seed_stat([float("nan")]).mean)


@pytest.fixture
def fake_trainer(monkeypatch):
    """Replace ``api.run`` by a recorder that writes a finished run without training."""
    calls = []

    def fake_run(config, *, resume=False, overwrite=False, progress=False, **_):
        calls.append((config.algorithm, config.seed, "resume" if resume else "overwrite" if overwrite else "new"))
        write_run(config.options.results_dir, config.algorithm, config.seed, config=config, **GOOD[config.seed])

    monkeypatch.setattr(api, "run", fake_run)
    return calls


def test_compare_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, tiny_config, fake_trainer):
    out = tmp_path / "cmp"
    config = api.make_config(tiny_config, algorithm="PRR",
                             overrides={"random_seed": 0, "prr_results_dir": str(run_folder(out, "PRR", 0))})
    write_run(run_folder(out, "PRR", 0), "PRR", 0, config=config, **GOOD[0])
    finished = run_folder(out, "PRR", 0) / "summary.json"
    before = (finished.read_text(), finished.stat().st_mtime_ns)
    interrupted = run_folder(out, "FedAvg", 0)
    interrupted.mkdir(parents=True)
    (interrupted / "resume.pt").write_bytes(b"state")

    report = compare(tiny_config, ["PRR", "fedavg"], [0, 1], out=out)

    assert fake_trainer == [("PRR", 1, "overwrite"), ("FedAvg", 0, "resume"), ("FedAvg", 1, "overwrite")]
    assert (finished.read_text(), finished.stat().st_mtime_ns) == before
    assert list(report.stats) == ["PRR", "FedAvg"]
    # a second call finds every run finished and trains nothing
    compare(tiny_config, ["PRR", "FedAvg"], [0, 1], out=out)
    assert len(fake_trainer) == 3


def test_unknown_algorithm_fails_before_any_run(tmp_path, tiny_config, fake_trainer, capsys):
    code = main(["compare", "--cf", str(tiny_config), "--algorithms", "FedAvg,NoSuchAlgo", "--seeds", "0",
                 "--out", str(tmp_path / "cmp"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "NoSuchAlgo" in err and "FedAvg" in err and "PRR" in err  # the known names are listed
    assert fake_trainer == []
    assert not (tmp_path / "cmp").exists()


def test_a_reference_not_compared_fails_before_any_run(tmp_path, tiny_config, fake_trainer, capsys):
    code = main(["compare", "--cf", str(tiny_config), "--algorithms", "PRR,FedAvg", "--seeds", "0",
                 "--reference", "FedBN", "--out", str(tmp_path / "cmp"), "--no-progress"])
    assert code == 2
    assert "--reference FedBN is not one of --algorithms (PRR, FedAvg)" in capsys.readouterr().err
    assert fake_trainer == [] and not (tmp_path / "cmp").exists()
    with pytest.raises(ConfigError, match="--reference FedBN"):
        compare(tiny_config, ["PRR", "FedAvg"], [0], out=tmp_path / "cmp", reference="FedBN")
    assert fake_trainer == []


def test_a_finished_run_under_another_config_is_refused_before_any_run(tmp_path, tiny_config, fake_trainer):
    out = tmp_path / "cmp"
    compare(tiny_config, ["FedAvg"], [0, 1], out=out)
    assert len(fake_trainer) == 2
    with pytest.raises(ValueError, match="comm_round|schedule"):
        compare(tiny_config, ["PRR", "FedAvg"], [0], out=out, overrides={"comm_round": 3})
    assert len(fake_trainer) == 2
    with pytest.raises(ValueError, match="random_seed"):
        compare(tiny_config, ["FedAvg"], [0], out=out, overrides={"random_seed": 4})


def test_compare_end_to_end_from_the_cli(tmp_path, tiny_config, capsys, monkeypatch):
    out = tmp_path / "cmp"
    assert main(["compare", "--cf", str(tiny_config), "--algorithms", "PRR,FedAvg", "--seeds", "0,1",
                 "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "| PRR | 2 |" in stdout and "| FedAvg | 2 |" in stdout and str(out) in stdout
    assert "## Paired differences to PRR" in stdout and "| FedAvg | 2 |" in stdout.split("## Paired")[1]
    assert "of 4 runs flattened" in stdout
    for name in ("table.md", "table.csv", "summary.txt", "curve_macro_f1.png", "clients_macro_f1.png",
                 "retrogress.png", "paired.md", "paired.csv", "paired.json", "paired.png", "convergence.csv",
                 "convergence.json"):
        assert (out / name).is_file(), name
    # tracking_args: enable_tracking -> every run of the matrix wrote its per-client curves
    for algorithm in ("PRR", "FedAvg"):
        board = run_folder(out, algorithm, 1) / "tensorboard"
        assert sorted(p.name for p in board.iterdir()) == ["A", "B", "C", "D", "_mean"]
        assert list((board / "A").glob("events.out.tfevents.*"))
    for name in ("curve_macro_f1.png", "clients_macro_f1.png", "retrogress.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000

    # the table summarises the real runs' summaries
    table = {r["algorithm"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert list(table) == ["PRR", "FedAvg"]
    for algorithm in ("PRR", "FedAvg"):
        summaries = [json.loads((run_folder(out, algorithm, s) / "summary.json").read_text()) for s in (0, 1)]
        assert [s["seed"] for s in summaries] == [0, 1] and summaries[0]["rounds"] == 2
        accuracy = [s["selected"]["mean"]["accuracy"] for s in summaries]
        assert float(table[algorithm]["accuracy_mean_pct"]) == pytest.approx(100 * statistics.mean(accuracy), abs=1e-3)
        assert float(table[algorithm]["accuracy_std_pct"]) == pytest.approx(100 * statistics.stdev(accuracy), abs=1e-3)
    # PRR never overwrites the personalized model it reports: no retrogress
    assert float(table["PRR"]["retrogress_mean_pct"]) == 0.0
    assert "Macro-F1" in (out / "summary.txt").read_text()

    # rerunning the same command trains nothing and rewrites the same table
    monkeypatch.setattr(api, "run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    first = (out / "table.md").read_text()
    assert main(["compare", "--cf", str(tiny_config), "--algorithms", "PRR,FedAvg", "--seeds", "0,1",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "table.md").read_text() == first
