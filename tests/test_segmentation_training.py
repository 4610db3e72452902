"""PRR and every baseline on a tiny synthetic prostate federation: segmentation end to end."""

import json

import pytest
import torch
import yaml

from fedml_prr.algorithms import ALGORITHMS
from fedml_prr.api import make_config, run
from fedml_prr.cli import main
from fedml_prr.cli.tables import format_table
from fedml_prr.data.synthetic_prostate import make_synthetic_prostate
from fedml_prr.runtime.sp import build_local_federation

from fedtiny import drive_one_step

SILOS = [0, 1, 2]


def tiny_doc(tmp_path, **prr):
    return {
        "data_args": {"dataset": "prostate_synthetic"},
        "model_args": {"model": "unet_small"},
        "train_args": {"comm_round": 2, "epochs": 2, "batch_size": 6, "learning_rate": 0.05},
        "prr_args": {"prr_image_size": 16, "prr_model_options": {"base": 4, "depth": 2}, "prr_eval_batch_size": 64,
                     "prr_dataset_options": {"cases": [2, 1, 1], "slices_per_case": 4, "sites": 3},
                     "prr_results_dir": str(tmp_path / "run"), "prr_fedrep_head_epochs": 1, **prr},
    }


@pytest.fixture(scope="module")
def federation():
    return make_synthetic_prostate(seed=0, image_size=16, cases=(2, 1, 1), slices_per_case=4, sites=3)


def test_segmentation_defaults_apply_unless_set(tmp_path):
    params = make_config(tiny_doc(tmp_path)).algorithm_params
    assert (params.cpa_init_rounds, params.cpa_tau, params.cpa_global_prototype, params.distill_weight) == (1, 1.0, "mean", 10.0)
    assert make_config(tiny_doc(tmp_path, prr_cpa_tau=2.0)).algorithm_params.cpa_tau == 2.0
    assert make_config({"prr_args": {}}).algorithm_params.cpa_tau == 3.0  # classification keeps the reference's


def test_prr_two_rounds_train_both_models_and_report_dice_per_site(tmp_path, federation):
    parties = build_local_federation(make_config(tiny_doc(tmp_path)), federation)
    drive_one_step(parties)  # handshake: global pixel counts
    pixels = sum(c.train.class_counts(2) for c in federation.clients)
    assert parties.coordinator.server.global_class_counts.tolist() == pixels.tolist() and pixels[1] < 0.05 * pixels[0]
    before = {s: {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in parties.clients[s].models.items()}
              for s in SILOS}
    for _ in range(4):  # 2 rounds x 2 epochs: PFA once, prototype factor from round 1 (t_init 1)
        drive_one_step(parties)
    for s in SILOS:
        client = parties.clients[s]
        assert client.task.name == "segmentation"
        for name, model in client.models.items():
            changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[s][name][k])]
            assert "classifier.weight" in changed and "down.0.0.0.weight" in changed, (s, name)
        assert client.local_proto_counts[1] > 0 and client.local_protos.shape == (2, client.feature_dim)
        assert client._prototype_gamma(1) is not None  # phase 2 of CPA reached
        assert set(client.last_epoch) >= {"dice_personal_train", "dice_deputy_train", "stage"}


def test_prr_run_writes_dice_records_and_table(tmp_path, federation):
    result = run(make_config(tiny_doc(tmp_path)), federation=federation)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({(r["round"], r["client"]) for r in records}) == [(t, c) for t in range(2) for c in "ABC"]
    for r in records:
        assert set(r["test"]) >= {"dice", "iou", "accuracy", "recall", "n"} and 0 <= r["test"]["dice"] <= 1
        assert r["retrogress"] == 0.0 and r["epochs"][0]["stage"] == 1
    summary = result.summary
    assert summary["task"] == "segmentation" and summary["selection_metric"] == "dice"
    assert set(summary["selected"]["mean"]) >= {"dice", "iou", "accuracy", "recall"}
    table = format_table(summary)
    assert "Dice" in table and all(f"\n{c} " in table for c in "ABC")


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_runs_on_segmentation(tmp_path, federation, name):
    doc = tiny_doc(tmp_path)
    doc["train_args"].update(comm_round=1, epochs=1)
    result = run(make_config(doc, algorithm=name), federation=federation)
    assert set(result.summary["selected"]["clients"]) == {"A", "B", "C"}
    assert all(0 <= m["test"]["dice"] <= 1 for m in result.summary["selected"]["clients"].values())


def test_a_classification_model_on_segmentation_data_is_refused(tmp_path, federation):
    doc = tiny_doc(tmp_path)
    doc["model_args"]["model"] = "resnet18"  # takes 16 px images (vgg16_slim needs 32: refused before)
    doc["prr_args"]["prr_model_options"] = {}
    with pytest.raises(ValueError, match="classification model.*segmentation"):
        build_local_federation(make_config(doc), federation)


def test_the_batched_engine_and_fedml_own_trainer_refuse_segmentation(tmp_path, federation):
    from fedml_prr.fedml_adapter.fedml_native import unsupported_by_fedml

    doc = tiny_doc(tmp_path, prr_engine="batched")
    with pytest.raises(TypeError, match="batched engine supports vgg16_slim only, got UNetSmall"):
        build_local_federation(make_config(doc), federation)
    problems = unsupported_by_fedml(make_config(tiny_doc(tmp_path)))
    assert any("segmentation" in p and "--algorithm FedAvg" in p for p in problems)


def test_compare_on_segmentation_writes_dice_table_curves_and_overlays(tmp_path):
    doc = tiny_doc(tmp_path)
    doc["train_args"].update(comm_round=1, epochs=1)
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "cmp"
    assert main(["compare", "--cf", str(path), "--algorithms", "PRR,FedAvg", "--seeds", "0", "--out", str(out),
                 "--no-progress"]) == 0
    markdown = (out / "table.md").read_text()
    assert "| Dice | IoU | Accuracy | Recall | Retrogress | Dice A |" in markdown
    for name in ("curve_dice.png", "clients_dice.png", "retrogress.png", "overlays.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "dice_A_mean_pct" in (out / "table.csv").read_text()


@pytest.mark.parametrize("name", ["prr_prostate_synthetic", "compare_prostate_synthetic", "prr_prostate_saml",
                                  "prr_prostate_prr"])
def test_prostate_configs_validate(name):
    from pathlib import Path

    cfg = make_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert cfg.algorithm_params.distill_weight == 10.0 and cfg.dataset.startswith("prostate_")
    if name.endswith(("saml", "prr")):  # the paper's prostate schedule
        s = cfg.schedule
        assert (cfg.options.image_size, s.batch_size, s.learning_rate, s.weight_decay, s.rounds, s.epochs,
                s.lr_decay_every) == (256, 8, 1e-3, 1e-6, 20, 5, 5)
