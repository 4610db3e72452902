"""PRR training and the single-process runtime on a tiny federation: behaviour, not just 'it ran'."""

import json

import pytest
import torch

from fedml_prr.api import make_config, run
from fedml_prr.runtime.sp import build_local_federation

from fedtiny import TINY, drive_one_step, tiny_federation

def config(tmp_path, algorithm="PRR", **prr):
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"].update(prr)
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    return make_config(doc, algorithm=algorithm)


def test_prr_step_trains_both_models_and_keeps_per_silo_state(tmp_path):
    fed = tiny_federation()
    parties = build_local_federation(config(tmp_path), fed)
    coordinator, clients = parties.coordinator, parties.clients
    silos = [0, 1, 2]
    drive_one_step(parties)  # handshake
    assert coordinator.server.global_class_counts.tolist() == [
        sum(int((c.train.labels == k).sum()) for c in fed.clients) for k in range(3)]
    before = {s: {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in clients[s].models.items()}
              for s in silos}
    uploads = drive_one_step(parties)  # round 0, epoch 0
    first_conv, last_conv = "features.0.0.weight", "features.4.6.weight"  # VGG16-slim's first and 13th conv
    for s in silos:
        client = clients[s]
        for name, model in client.models.items():
            state = model.state_dict()
            for key in (first_conv, last_conv, "fc2.weight"):
                assert not torch.equal(state[key], before[s][name][key]), (s, name, key)
        assert int(client.stage) == 1  # first epoch of a round is RECOVER
        assert client.local_proto_counts.sum().item() > 0
    # personalized models differ across silos (different data), deputies not uploaded mid-round
    assert not torch.equal(clients[0].personal.state_dict()["fc2.weight"], clients[1].personal.state_dict()["fc2.weight"])
    assert all("deputy" not in u for u in uploads.values())
    uploads = drive_one_step(parties)  # round 0, epoch 1: last of round
    assert all("deputy" in u for u in uploads.values())
    assert set(coordinator.server.deputies) == set(silos)
    personal_before = clients[0].personal.state_dict()["fc2.weight"].clone()
    messages = coordinator.messages()
    clients[0].receive(messages[0])
    # the server's deputy replaces D_0 but never touches P_0
    assert torch.equal(clients[0].personal.state_dict()["fc2.weight"], personal_before)
    assert torch.allclose(clients[0].deputy.state_dict()["fc2.weight"], messages[0]["deputy"]["fc2.weight"])


def test_client_missing_a_class_trains_with_finite_losses(tmp_path):
    fed = tiny_federation(missing_class_client=1)
    parties = build_local_federation(config(tmp_path, prr_cpa_global_prototype="mean"), fed)
    for _ in range(1 + 4):  # handshake + 2 rounds x 2 epochs: phase 2 of CPA is reached
        drive_one_step(parties)
    client = parties.clients[1]
    assert client.local_proto_counts[2].item() == 0
    assert torch.isfinite(torch.tensor([client.last_epoch["loss_personal"], client.last_epoch["loss_deputy"]])).all()
    assert torch.isfinite(parties.coordinator.server.global_protos).all()


@pytest.mark.parametrize("algorithm", ["PRR", "FedAvg"])
def test_two_round_run_writes_results(tmp_path, algorithm):
    cfg = config(tmp_path, algorithm)
    result = run(cfg, federation=tiny_federation())
    root = tmp_path / "run"
    records = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert sorted({(r["round"], r["client"]) for r in records}) == [(t, c) for t in range(2) for c in "ABC"]
    for r in records:
        assert 0.0 <= r["test"]["accuracy"] <= 1.0 and r["test"]["n"] == 9
    summary = json.loads((root / "summary.json").read_text())
    assert summary["algorithm"] == algorithm and set(summary["selected"]["clients"]) == {"A", "B", "C"}
    assert json.loads((root / "config.resolved.json").read_text())["algorithm"] == algorithm
    for kind in ("best", "last"):
        assert sorted(p.name for p in (root / "checkpoints" / kind).iterdir()) == ["A.pt", "B.pt", "C.pt"]
    if algorithm == "PRR":  # P_k is never replaced by the server: no retrogress by construction
        assert all(r["retrogress"] == 0.0 for r in records)
        assert all(len(r["epochs"]) == 2 and r["epochs"][0]["stage"] == 1 for r in records)
        assert all(r["epochs"][1]["stage"] in (1, 2) for r in records)  # RECOVER never jumps to 3
    assert result.summary["selected_round"] == summary["selected_round"]


def test_resume_ends_with_the_same_metrics(tmp_path):
    fed = tiny_federation()
    full = run(config(tmp_path / "full"), federation=fed)
    cfg = config(tmp_path / "cut")
    # interrupt the run right after round 0's checkpoint, then resume it
    from fedml_prr.runtime import sp

    class Interrupt(Exception):
        pass

    original = sp.ResultsStore.save_resume
    calls = {"n": 0}

    def save_then_stop(self, state):
        original(self, state)
        calls["n"] += 1
        raise Interrupt()

    sp.ResultsStore.save_resume = save_then_stop
    try:
        with pytest.raises(Interrupt):
            run(cfg, federation=fed)
    finally:
        sp.ResultsStore.save_resume = original
    assert calls["n"] == 1
    resumed = run(cfg, federation=fed, resume=True)
    a, b = full.summary, resumed.summary
    assert a["selected_round"] == b["selected_round"]
    for client in "ABC":
        for metric in ("accuracy", "macro_f1", "auc"):
            assert a["final"]["clients"][client]["test"][metric] == pytest.approx(
                b["final"]["clients"][client]["test"][metric], abs=1e-9)
    lines_full = (tmp_path / "full" / "run" / "metrics.jsonl").read_text().splitlines()
    lines_resumed = (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines_full) == len(lines_resumed) == 6
    assert [json.loads(x)["test"] for x in lines_full] == [json.loads(x)["test"] for x in lines_resumed]


def test_prr_with_one_local_epoch_per_round(tmp_path):
    # the reference code crashes with E = 1; here every epoch is both the first and the last of its round
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["train_args"]["epochs"] = 1
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    parties = build_local_federation(make_config(doc), tiny_federation())
    coordinator, clients = parties.coordinator, parties.clients
    assert coordinator.num_steps == 1 + 2  # handshake + one step per round (T = 2)
    parties.step()  # handshake
    for round_idx in range(2):
        parties.deliver()
        if round_idx == 1:  # round 0's mixed deputies arrived
            for s, c in clients.items():
                assert torch.equal(c.deputy.state_dict()["fc2.weight"], coordinator.server.deputies[s]["fc2.weight"])
        uploads = parties.train()
        assert all(int(c.stage) == 1 and len(c.epoch_log) == 1 for c in clients.values())  # RECOVER only
        # every step closes its round: the deputy goes up (but after the last round) and comes back mixed
        assert all(("deputy" in u) == (round_idx == 0) for u in uploads.values())
        coordinator.aggregate(uploads)
        if round_idx == 0:
            assert all(not torch.equal(coordinator.server.deputies[s]["fc2.weight"], u["deputy"]["fc2.weight"])
                       for s, u in uploads.items())
    result = run(make_config(doc), federation=tiny_federation(), overwrite=True)
    assert result.summary["last_round"] == 1
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["round"] for r in records) == [0, 0, 0, 1, 1, 1]
    assert all(len(r["epochs"]) == 1 and r["epochs"][0]["stage"] == 1 for r in records)
    assert all(0 <= m["test"]["macro_f1"] <= 1 for m in result.summary["final"]["clients"].values())


def test_results_are_never_clobbered_and_resume_checks_the_config(tmp_path):
    fed = tiny_federation()
    cfg = config(tmp_path)
    run(cfg, federation=fed)
    first = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite to replace it"):
        run(cfg, federation=fed)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == first  # nothing lost
    other = config(tmp_path, prr_det_a1=0.5)
    with pytest.raises(ValueError, match="differs from the interrupted run's in \\['algorithm_params'\\]"):
        run(other, federation=fed, resume=True)
    run(cfg, federation=fed, overwrite=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == first  # same seed, same result


class _Evil:
    """Unpickling this creates a file: proof that a resume file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["torch.save", "plain pickle", "truncated"])
def test_a_crafted_or_damaged_resume_file_is_refused_without_running_its_code(tmp_path, kind):
    import pickle

    fed = tiny_federation()
    cfg = config(tmp_path)
    run(cfg, federation=fed)
    resume = tmp_path / "run" / "resume.pt"
    marker = tmp_path / "pwned"
    if kind == "torch.save":
        torch.save({"step": 3, "server": _Evil(marker)}, resume)
    elif kind == "plain pickle":
        resume.write_bytes(pickle.dumps({"step": 3, "server": _Evil(marker)}))
    else:
        resume.write_bytes(resume.read_bytes()[:100])
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="cannot resume from .*resume.pt: the file is damaged or truncated.*--overwrite"):
        run(cfg, federation=fed, resume=True)
    assert not marker.exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing lost
