"""Every registered algorithm: a 2-round run changes the right parameters and keeps the right ones local."""

import json

import pytest
import torch

from fedml_prr.algorithms import ALGORITHMS
from fedml_prr.algorithms.single_model import batchnorm_keys, head_keys
from fedml_prr.api import make_config, run
from fedml_prr.runtime.sp import build_local_federation

from fedtiny import TINY, drive_one_step, tiny_federation

SILOS = [0, 1, 2]


def participants(tmp_path, algorithm, **extra):
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["train_args"]["epochs"] = 1
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / algorithm)
    doc["prr_args"].update(extra)
    cfg = make_config(doc, algorithm=algorithm)
    return build_local_federation(cfg, tiny_federation())


def states(parties, attr="reported"):
    out = {}
    for s in SILOS:
        client = parties.clients[s]
        model = client.reported_model() if attr == "reported" else getattr(client, attr)
        out[s] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def run_rounds(parties, steps):
    """Drive ``steps`` protocol steps (handshake included); returns every upload, in order."""
    uploads = []
    for _ in range(steps):
        uploads += [u for _, u in sorted(drive_one_step(parties).items())]
    parties.deliver()  # deliver the last aggregation
    return uploads


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_runs_two_rounds_end_to_end(tmp_path, name):
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    doc["prr_args"]["prr_fedrep_head_epochs"] = 1
    result = run(make_config(doc, algorithm=name), federation=tiny_federation())
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 and result.summary["algorithm"] == name
    assert all(0 <= r["test"]["accuracy"] <= 1 for r in records)


@pytest.mark.parametrize("name", [n for n in ALGORITHMS.names() if n != "Local"])
def test_reported_models_train(tmp_path, name):
    parties = participants(tmp_path, name, prr_fedrep_head_epochs=1)
    run_rounds(parties, 1)
    before = states(parties)
    run_rounds(parties, 2)
    after = states(parties)
    for s in SILOS:
        assert any(not torch.equal(before[s][k], after[s][k]) for k in before[s] if before[s][k].is_floating_point())


def test_fedavg_and_fedprox_clients_share_one_model(tmp_path):
    for name in ("FedAvg", "FedProx", "FedLC", "Centralized"):
        parties = participants(tmp_path, name)
        run_rounds(parties, 3)
        got = states(parties)
        assert all(torch.equal(got[0][k], got[s][k]) for s in SILOS for k in got[0]), name


def test_fedbn_keeps_batchnorm_local(tmp_path):
    parties = participants(tmp_path, "FedBN")
    uploads = run_rounds(parties, 3)
    bn = batchnorm_keys(parties.clients[0].model)
    assert bn and all(not (set(u.get("state", {})) & bn) for u in uploads)
    got = states(parties)
    shared = [k for k in got[0] if k not in bn]
    assert all(torch.equal(got[0][k], got[1][k]) for k in shared)
    assert any(not torch.equal(got[0][k], got[1][k]) for k in bn if got[0][k].is_floating_point())


@pytest.mark.parametrize("name", ["FedPer", "FedRep"])
def test_personal_head_never_leaves_the_client(tmp_path, name):
    parties = participants(tmp_path, name, prr_fedrep_head_epochs=1)
    uploads = run_rounds(parties, 3)
    head = head_keys(parties.clients[0].model)
    assert head == {"fc2.weight"}
    assert all(not (set(u.get("state", {})) & head) for u in uploads)
    got = states(parties)
    assert not torch.equal(got[0]["fc2.weight"], got[1]["fc2.weight"])
    assert torch.equal(got[0]["fc1.weight"], got[1]["fc1.weight"])


def test_fedrep_trains_head_then_body(tmp_path):
    parties = participants(tmp_path, "FedRep", prr_fedrep_head_epochs=1)
    run_rounds(parties, 1)
    client = parties.clients[0]
    head_before = client.model.fc2.weight.detach().clone()
    body_before = client.model.fc1.weight.detach().clone()
    from fedml_prr.training.federated import step_info

    client.params = type(client.params)(fedrep_head_epochs=0)  # body epochs only: head frozen
    client.local_step(step_info(1, 1, client.ctx.schedule))
    assert torch.equal(client.model.fc2.weight, head_before)
    assert not torch.equal(client.model.fc1.weight, body_before)
    assert all(p.requires_grad for p in client.model.parameters())


def test_local_only_sends_nothing(tmp_path):
    parties = participants(tmp_path, "Local")
    uploads = run_rounds(parties, 3)
    assert all(set(u) <= {"silo", "step", "num_samples", "class_counts", "loss"} for u in uploads)
    messages = parties.coordinator.messages()
    assert all(set(m) == {"silo", "step", "final"} for m in messages.values())


def test_ditto_personal_model_is_reported_and_never_sent(tmp_path):
    parties = participants(tmp_path, "Ditto")
    uploads = run_rounds(parties, 3)
    client = parties.clients[0]
    assert client.reported_model() is client.personal
    sent = uploads[-1]["state"]
    assert not torch.equal(sent["fc2.weight"], client.personal.state_dict()["fc2.weight"].cpu())
    got = states(parties)
    assert not torch.equal(got[0]["fc2.weight"], got[1]["fc2.weight"])


def test_fedprox_mu_pulls_towards_the_global_model(tmp_path):
    moved = {}
    for mu in (0.0, 5.0):  # lr * mu < 1: the proximal step is stable
        parties = participants(tmp_path / str(mu), "FedProx", prr_fedprox_mu=mu)
        run_rounds(parties, 1)
        start = {n: p.detach().clone() for n, p in parties.clients[0].model.named_parameters()}
        uploads = run_rounds(parties, 1)
        sent = next(u["state"] for u in uploads if u["silo"] == 0)  # the client's own update
        moved[mu] = sum((sent[n] - p).pow(2).sum().item() for n, p in start.items())
    assert moved[5.0] < 0.8 * moved[0.0]


def test_fedprox_reads_fedmls_own_key():
    cfg = make_config({"train_args": {"federated_optimizer": "FedProx", "fedprox_mu": 0.5}})
    assert cfg.algorithm_params.fedprox_mu == 0.5


def test_fedlc_calibrates_logits_by_local_counts(tmp_path):
    parties = participants(tmp_path, "FedLC", prr_fedlc_tau=2.0)
    client = parties.clients[0]
    logits, targets = torch.zeros(2, 3), torch.tensor([0, 2])
    counts = client.class_counts.clamp_min(1).float()
    expected = torch.nn.functional.cross_entropy(-2.0 * counts.pow(-0.25).expand(2, 3), targets)
    assert torch.allclose(client.batch_loss(logits, None, targets), expected)


def test_prr_without_det_trains_one_model(tmp_path):
    no_det = participants(tmp_path / "a", "PRR-noDET")
    client = no_det.clients[0]
    assert client.personal is client.deputy and list(client.models) == ["deputy"]
    assert client.REPORTED_MODEL_REPLACED_ON_RECEIVE


def _first_epoch(tmp_path, name, round_idx):
    """A PRR-family client of an imbalanced tiny federation (silo 1 lacks class 2), after the
    handshake, beginning an epoch of round ``round_idx`` with a global prototype in hand."""
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / name)
    parties = build_local_federation(make_config(doc, algorithm=name), tiny_federation(missing_class_client=1))
    parties.step()  # handshake: the global class counts arrive with the next message
    parties.deliver()
    client = parties.clients[0]
    client.global_protos = torch.rand(3, client.feature_dim)
    client.local_protos = torch.rand(3, client.feature_dim)
    from fedml_prr.training.federated import step_info

    spr = client.spr
    return client, client.begin_epoch(step_info(1 + round_idx * spr, spr, client.ctx.schedule))


def test_prr_without_cpa_trains_with_plain_cross_entropy(tmp_path):
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    for name, plain in (("PRR", False), ("PRR-noCPA", True)):
        client, epoch = _first_epoch(tmp_path, name, round_idx=1)  # past t_init (1): phase 2 of CPA
        assert client.global_class_counts.tolist()[2] < client.global_class_counts.tolist()[0]  # imbalanced
        loss_p, loss_d, _ = epoch.losses(logits, logits.clone(), targets)
        ce = torch.nn.functional.cross_entropy(logits, targets)
        assert (epoch.gamma is None) == plain
        assert torch.allclose(loss_p, ce) == plain, name  # CPA re-weights; without CPA it is exactly CE


def test_prr_amp_shares_amplitude_only_and_prr_no_pfa_averages(tmp_path):
    from fedml_prr.core.averaging import weighted_average
    from fedml_prr.core.fourier import pfa_ratio, progressive_fourier_aggregate

    mixed = {}
    for name in ("PRR", "PRR-amp", "PRR-noPFA"):
        parties = participants(tmp_path / name, name)
        uploads = run_rounds(parties, 2)  # handshake + round 0 (E = 1): the deputies are mixed
        deputies = [u["deputy"] for u in uploads[-3:]]
        mixed[name] = parties.coordinator.server.deputies
        ratio = pfa_ratio(0, 2)
        if name == "PRR-noPFA":
            expected = weighted_average(deputies)  # uniform, as PFA's averages (prr_pfa_sample_weighted: false)
            assert torch.equal(mixed[name][0]["fc2.weight"], mixed[name][1]["fc2.weight"])
            assert torch.allclose(mixed[name][0]["fc2.weight"], expected["fc2.weight"])
            assert not torch.equal(mixed[name][0]["bn_fc1.running_mean"], mixed[name][1]["bn_fc1.running_mean"])
        else:
            expected = progressive_fourier_aggregate(deputies, ratio, share_phase=name == "PRR")
            for silo in SILOS:
                for key in ("features.0.0.weight", "fc1.weight", "fc2.weight"):
                    assert torch.equal(mixed[name][silo][key], expected[silo][key]), (name, key)
    conv = "features.4.6.weight"
    assert not torch.allclose(mixed["PRR"][0][conv], mixed["PRR-amp"][0][conv])
