"""PRR's diagnosis in the metric records: DET stage, CPA factor, P's and D's validation score
around each receive (docs/algorithm.md, "Diagnosis")."""

import json

import pytest
import torch

from fedml_prr.api import make_config, run
from fedml_prr.runtime.sp import build_local_federation

from fedtiny import TINY, drive_one_step, tiny_federation


def config(tmp_path, algorithm="PRR", train=None, **prr):
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"].update(prr)
    doc["train_args"].update(train or {})
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    return make_config(doc, algorithm=algorithm)


def records_of(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


KEYS = ("f1_personal_valid_before_receive", "f1_personal_valid_after_receive",
        "f1_deputy_valid_before_receive", "f1_deputy_valid_after_receive", "deputy_received")


@pytest.mark.parametrize("algorithm", ["PRR", "PRR-noDET"])
def test_records_carry_the_diagnosis(tmp_path, algorithm):
    run(config(tmp_path, algorithm, train={"comm_round": 3}), federation=tiny_federation())
    records = records_of(tmp_path)
    assert len(records) == 9
    for r in records:
        assert all(k in r for k in KEYS)
        # a deputy comes at every round boundary but the last (the run is over)
        assert r["deputy_received"] is (r["round"] < 2)
        # P's after-receive score is the reported validation macro-F1; PRR's P is never replaced
        assert r["f1_personal_valid_after_receive"] == pytest.approx(r["valid"]["macro_f1"], abs=1e-12)
        if algorithm == "PRR":
            assert r["f1_personal_valid_after_receive"] == r["f1_personal_valid_before_receive"]
        if not r["deputy_received"]:  # nothing received: after = before, for both models
            assert r["f1_deputy_valid_after_receive"] == r["f1_deputy_valid_before_receive"]
            assert r["f1_personal_valid_after_receive"] == r["f1_personal_valid_before_receive"]
        if algorithm == "PRR-noDET":  # one model: P is D
            assert r["f1_personal_valid_after_receive"] == r["f1_deputy_valid_after_receive"]
        for e in r["epochs"]:  # CPA's prototype factor: none before t_init (1 round here), then in [1, 4/3]
            if r["round"] < 1:
                assert e["gamma"] is None
            else:
                assert len(e["gamma"]) == 3 and all(1.0 - 1e-6 <= g <= 4 / 3 + 1e-6 for g in e["gamma"])
    # the aggregated deputy differs from the one trained: its score moves on some client and round
    received = [r for r in records if r["deputy_received"]]
    assert any(r["f1_deputy_valid_after_receive"] != r["f1_deputy_valid_before_receive"] for r in received)


def test_deputy_after_receive_is_the_received_state_scored(tmp_path):
    fed = tiny_federation()
    parties = build_local_federation(config(tmp_path), fed)
    for _ in range(1 + 2):  # handshake, round 0's two epochs
        drive_one_step(parties)
    trained = {s: {k: v.clone() for k, v in c.deputy.state_dict().items()} for s, c in parties.clients.items()}
    messages = parties.coordinator.messages()
    for silo, client in parties.clients.items():
        client.receive(messages[silo])
        (record,) = client.pop_records()
        task, n, bs = client.task, client.ctx.num_classes, client.ctx.eval_batch_size
        for state, key in ((messages[silo]["deputy"], "f1_deputy_valid_after_receive"),
                           (trained[silo], "f1_deputy_valid_before_receive")):
            model = client.ctx.build_model()
            model.load_state_dict(state)
            assert record[key] == pytest.approx(task.score(model, client.valid_split, n, bs), abs=1e-12)
        assert record["deputy_received"] is True


def test_diagnostics_off_records_no_boundary_scores(tmp_path):
    run(config(tmp_path, prr_diagnostics=False), federation=tiny_federation())
    for r in records_of(tmp_path):
        assert not any(k in r for k in KEYS)
        assert all("gamma" in e and "stage" in e for e in r["epochs"])  # the per-epoch record costs nothing


@pytest.mark.parametrize("algorithm, engine, models", [
    ("PRR", "loop", {"personal", "deputy"}), ("PRR", "batched", {"personal", "deputy"}),
    ("PRR-noDET", "loop", {"model"}), ("FedAvg", "loop", {"model"}), ("FedAvg", "batched", {"model"})])
def test_eval_every_epoch_records_each_epoch_and_each_receive(tmp_path, algorithm, engine, models):
    rounds, epochs = 3, 2
    run(config(tmp_path / "on", algorithm, train={"comm_round": rounds}, prr_eval_every_epoch=True, prr_engine=engine),
        federation=tiny_federation())
    run(config(tmp_path / "off", algorithm, train={"comm_round": rounds}, prr_engine=engine),
        federation=tiny_federation())
    on, off = records_of(tmp_path / "on"), records_of(tmp_path / "off")
    assert sum(len(r["test_every_epoch"]) for r in on) == rounds * epochs * 3  # rounds x epochs per client
    for r, plain in zip(on, off):
        assert "test_every_epoch" not in plain and "test_after_receive" not in plain
        # evaluating draws nothing and trains nothing: the run is the same run
        assert r["test"] == plain["test"] and r["valid"] == plain["valid"]
        assert all(set(e) == models for e in r["test_every_epoch"]) and set(r["test_after_receive"]) == models
        reported = "personal" if "personal" in models else "model"
        # the last epoch's point is the before-receive evaluation, the after-receive point the record's
        assert r["test_every_epoch"][-1][reported] == r["test_before_receive"]
        assert r["test_after_receive"][reported] == r["test"]
        if algorithm == "PRR" and r["round"] < rounds - 1:  # the received deputy is what D is after the receive
            assert r["test_after_receive"]["deputy"] != r["test_every_epoch"][-1]["deputy"]


def test_diagnose_command_on_a_prr_and_a_fedavg_run(tmp_path, capsys):
    import csv

    from fedml_prr.cli import main
    from fedml_prr.compare.diagnosis import client_summaries, diagnosis_rows, read_run_records, receive_drops, \
        retrogress_curves

    for algorithm in ("PRR", "FedAvg"):
        run(config(tmp_path / algorithm, algorithm, train={"comm_round": 3}, prr_eval_every_epoch=True),
            federation=tiny_federation())
    out = tmp_path / "diagnosis"
    assert main(["diagnose", str(tmp_path / "PRR" / "run"), str(tmp_path / "FedAvg" / "run"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {c} " in printed for c in "ABC") and "FedAvg (" in printed and "no DET records" in printed
    assert {p.name for p in out.iterdir()} == {"diagnosis_PRR.csv", "diagnosis_PRR.png", "retrogress_epochs.png"}
    rows = list(csv.DictReader((out / "diagnosis_PRR.csv").open()))
    assert sorted((int(r["round"]), r["client"]) for r in rows) == [(t, c) for t in range(3) for c in "ABC"]
    assert all(r["stages"].split("-")[0] == "1" and len(r["stages"].split("-")) == 2 for r in rows)

    prr = read_run_records(tmp_path / "PRR" / "run")
    rows = diagnosis_rows(prr)
    for row, record in zip(rows, sorted(prr.records, key=lambda r: (r["round"], r["silo"]))):
        if record["deputy_received"]:
            assert row["deputy_gain"] == record["f1_deputy_valid_after_receive"] - record["f1_deputy_valid_before_receive"]
    for summary in client_summaries(rows):
        assert sum(summary.stage_share.values()) == pytest.approx(1.0) and summary.rounds == 3
    curves = retrogress_curves(prr)
    assert set(curves) == {"personal", "deputy"} and all(len(p) == 3 * (2 + 1) for p in curves["personal"].values())
    drops = receive_drops(curves)
    assert drops["personal"] == 0.0 and drops["deputy"] != 0.0  # P_k is never replaced, D_k is
    assert set(retrogress_curves(read_run_records(tmp_path / "FedAvg" / "run"))) == {"model"}


def test_diagnose_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    from fedml_prr.cli import main

    assert main(["diagnose", str(tmp_path)]) != 0
    assert "is not a run folder: config.resolved.json is missing" in capsys.readouterr().err


def test_eval_every_epoch_leaves_out_a_method_that_reports_another_model(tmp_path):
    # Ditto reports its personal model but its epochs train the global one first: nothing recorded
    run(config(tmp_path, "Ditto", prr_eval_every_epoch=True), federation=tiny_federation())
    assert all("test_every_epoch" not in r and "test_after_receive" not in r for r in records_of(tmp_path))
