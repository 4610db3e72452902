"""A run's files: strict JSON with null for NaN (read back as NaN), and TensorBoard event files of the
per-client curves when ``tracking_args: enable_tracking`` is on."""

import json
import math

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedml_prr import api
from fedml_prr.config import ConfigError
from fedml_prr.training.results import ResultsStore, read_records, read_summary
from fedml_prr.training.tracking import MEAN_RUN, TENSORBOARD_FOLDER

NAN = float("nan")


def block(f1, auc=NAN, n=10):
    return {"accuracy": f1 + 0.1, "balanced_accuracy": f1 + 0.05, "macro_f1": f1, "auc": auc, "n": n}


def records(round_idx, f1s, retro):
    return [{"round": round_idx, "silo": i, "client": name, "valid": block(f1 + 0.01), "test": block(f1),
             "test_before_receive": block(f1), "retrogress": r, "epochs": [{"f1_personal_train": NAN}]}
            for i, (name, f1, r) in enumerate(zip("AB", f1s, retro))]


def strict_loads(text):
    """json.loads that refuses NaN / Infinity tokens, as jq and other RFC 8259 parsers do."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_metrics_and_summary_are_strict_json_and_read_back_nan(tmp_path):
    store = ResultsStore(tmp_path, total_rounds=2, selection_fraction=0.0)
    store.start_fresh({}, overwrite=True)
    store.add_round(0, records(0, [0.2, 0.4], [NAN, 0.0]), None)
    store.add_round(1, records(1, [0.3, 0.5], [-0.1, float("inf")]), None)
    store.summary({"algorithm": "X", "dataset": "toy", "seed": 0, "wall_time_s": 1.0})

    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    parsed = [strict_loads(line) for line in text.splitlines()]
    assert parsed[0]["retrogress"] is None and parsed[0]["test"]["auc"] is None
    assert parsed[0]["epochs"][0]["f1_personal_train"] is None
    summary_text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in summary_text
    assert strict_loads(summary_text)["selected"]["mean"]["auc"] is None

    back = read_records(tmp_path / "metrics.jsonl")
    assert len(back) == 4 and math.isnan(back[0]["retrogress"]) and math.isnan(back[0]["test"]["auc"])
    assert back[1]["retrogress"] == 0.0 and back[2]["test"]["macro_f1"] == 0.3
    assert math.isnan(read_summary(tmp_path / "summary.json")["selected"]["mean"]["auc"])


def test_resume_reads_null_back_as_nan_and_keeps_the_selection(tmp_path):
    store = ResultsStore(tmp_path, total_rounds=3, selection_fraction=0.0)
    store.start_fresh({}, overwrite=True)
    store.add_round(0, records(0, [0.2, 0.4], [NAN, NAN]), None)
    store.add_round(1, records(1, [0.6, 0.8], [0.1, NAN]), None)
    store.add_round(2, records(2, [0.1, 0.1], [0.0, 0.0]), None)  # written, then "interrupted" before resume.pt

    again = ResultsStore(tmp_path, total_rounds=3, selection_fraction=0.0)
    again.reload(completed_rounds=2)
    assert sorted(again.rounds) == [0, 1] and again.selection.round == 1
    assert math.isnan(again.rounds[0][0]["retrogress"]) and again.rounds[1][0]["retrogress"] == pytest.approx(0.1)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()


def test_files_written_before_null_was_used_are_still_read(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"round": 0, "retrogress": NaN, "test": {"auc": NaN}}\n')
    assert math.isnan(read_records(tmp_path / "metrics.jsonl")[0]["retrogress"])


def scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]  # TensorBoard stores float32


def test_tracker_writes_each_clients_curves_and_the_client_mean(tmp_path):
    from fedml_prr.training.tracking import TensorBoardTracker

    store = ResultsStore(tmp_path, total_rounds=2, selection_fraction=0.0)
    store.start_fresh({}, overwrite=True)
    store.tracker = TensorBoardTracker(tmp_path, ("accuracy", "balanced_accuracy", "macro_f1", "auc"))
    store.add_round(0, records(0, [0.25, 0.5], [NAN, -0.25]), None)
    store.add_round(1, records(1, [0.75, 0.5], [0.125, 0.0]), None)
    store.summary({"algorithm": "X", "dataset": "toy", "seed": 0, "wall_time_s": 1.0})

    board = tmp_path / TENSORBOARD_FOLDER
    assert scalars(board / "A", "test/macro_f1") == [(0, 0.25), (1, 0.75)]
    assert scalars(board / "B", "valid/macro_f1") == [(0, 0.51), (1, 0.51)]
    assert scalars(board / "B", "test/balanced_accuracy") == [(0, 0.55), (1, 0.55)]
    assert scalars(board / "A", "retrogress") == [(1, 0.125)]  # the NaN of round 0 is not written
    assert scalars(board / MEAN_RUN, "test/macro_f1") == [(0, 0.375), (1, 0.625)]
    assert scalars(board / MEAN_RUN, "retrogress") == [(0, -0.25), (1, 0.0625)]
    assert "test/auc" not in EventAccumulator(str(board / "A")).Reload().Tags()["scalars"]  # NaN everywhere


TINY = {"data_args": {"dataset": "derm_synthetic"}, "model_args": {"model": "vgg16_slim"},
        "train_args": {"federated_optimizer": "FedAvg", "comm_round": 2, "epochs": 1, "batch_size": 8},
        "prr_args": {"prr_image_size": 32, "prr_dataset_options": {"scale": 0.03}, "prr_model_options": {"width": 0.25},
                     "prr_threads": 1}}


def test_enable_tracking_in_tracking_args_writes_the_runs_curves(tmp_path):
    document = {**TINY, "tracking_args": {"enable_tracking": True, "log_file_dir": "logs", "enable_wandb": False},
                "prr_args": {**TINY["prr_args"], "prr_results_dir": str(tmp_path / "run")}}
    config = api.make_config(document)
    assert config.tracking
    result = api.run(config, overwrite=True)
    board = tmp_path / "run" / TENSORBOARD_FOLDER
    for client in result.summary["clients"]:
        recorded = scalars(board / client, "test/macro_f1")
        assert [step for step, _ in recorded] == [0, 1]
        final = result.summary["final"]["clients"][client]["test"]["macro_f1"]
        assert recorded[-1][1] == pytest.approx(final, abs=1e-6)
    assert [s for s, _ in scalars(board / MEAN_RUN, "valid/accuracy")] == [0, 1]


def test_tracking_off_by_default_and_its_keys_are_checked(tmp_path):
    config = api.make_config({**TINY, "prr_args": {**TINY["prr_args"], "prr_results_dir": str(tmp_path)}})
    assert not config.tracking
    with pytest.raises(ConfigError, match="enable_tracking"):
        api.make_config({**TINY, "tracking_args": {"enable_tracking": "yes"}})
    path = tmp_path / "fedml_style.yaml"  # FedML's own tracking keys are accepted
    path.write_text(yaml.safe_dump({**TINY, "tracking_args": {"enable_tracking": False, "log_file_dir": "./log",
                                                              "run_name": "r", "wandb_project": "p"}}))
    assert not api.make_config(path).tracking


def test_tracking_keys_do_not_block_a_resume(tmp_path):
    store = ResultsStore(tmp_path, total_rounds=1, selection_fraction=0.0)
    store.start_fresh({"fedml": {"comm_round": 2, "enable_tracking": False}, "seed": 0}, overwrite=True)
    assert store.config_changes({"fedml": {"comm_round": 2, "enable_tracking": True, "log_file_dir": "x"},
                                 "seed": 0}) == []
    assert store.config_changes({"fedml": {"comm_round": 3}, "seed": 0}) == ["fedml"]
