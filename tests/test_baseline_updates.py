"""FedRoD, FedALA, SCAFFOLD and FedAvg-FT: each update rule against a hand computation on a
two-layer linear model, what stays on the client, the batched engine, and the server's validator."""

import copy

import pytest
import torch
from torch import nn

from fedml_prr.algorithms.fedala import adaptive_local_aggregation, top_layer_keys
from fedml_prr.algorithms.scaffold import ScaffoldServer, optimizer_steps_per_epoch
from fedml_prr.api import make_config
from fedml_prr.algorithms import get_algorithm
from fedml_prr.config import TrainSchedule
from fedml_prr.data.federation import ClientData, ImageSplit
from fedml_prr.runtime.sp import build_local_federation
from fedml_prr.training.federated import ClientContext, step_info
from fedml_prr.training.validation import UpdateError

from fedtiny import TINY, collect_uploads, drive_one_step, tiny_federation

SILOS = [0, 1, 2]
PROTOCOL = {"silo", "step", "num_samples"}

# ----------------------------------------------------------------------------- a hand-checkable model
A0 = torch.tensor([[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]])  # fc1: 3 -> 2 (the body)
H0 = torch.tensor([[0.3, -0.2], [-0.5, 0.4], [0.2, 0.6]])  # fc2: 2 -> 3 (the classifier)
IMAGES = torch.tensor([[200, 10, 90], [30, 250, 120], [128, 60, 0], [255, 140, 220]], dtype=torch.uint8)
LABELS = torch.tensor([0, 2, 0, 0])  # class 1 absent: FedRoD's prior excludes it


class TwoLayer(nn.Module):
    """``r = A x``, ``logits = H r`` on 1x1 RGB images; no bias, no BatchNorm."""

    classifier_key = "fc2.weight"
    feature_dim = 2

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 2, bias=False)
        self.fc2 = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(A0)
            self.fc2.weight.copy_(H0)

    def forward(self, x):
        r = self.fc1(x.flatten(1))
        return self.fc2(r), r


def inputs():
    return IMAGES.float() / 127.5 - 1.0  # the documented model input, [N, 3]


def tiny_context(lr=0.1, epochs=1, batch_size=8):
    split = ImageSplit(IMAGES.view(4, 3, 1, 1), LABELS.clone())
    schedule = TrainSchedule(rounds=3, epochs=epochs, batch_size=batch_size, learning_rate=lr, weight_decay=0.0,
                             momentum=0.0)
    return ClientContext(silo=0, data=ClientData("A", split, split, split), num_classes=3, build_model=TwoLayer,
                         schedule=schedule, device=torch.device("cpu"), seed=0, augment=False)


def client_of(name, ctx, **params):
    spec = get_algorithm(name)
    return spec.client(ctx, spec.params(**params))


def ce_logit_grad(logits, labels):
    """d mean CE / d logits = (softmax - onehot) / N."""
    return (torch.softmax(logits, 1) - torch.eye(3)[labels]) / len(labels)


# ----------------------------------------------------------------------------- tiny-federation helpers
def participants(tmp_path, algorithm, **prr):
    doc = copy.deepcopy(TINY)
    doc["train_args"]["epochs"] = 1
    doc["prr_args"].update(prr, prr_results_dir=str(tmp_path / "run"))
    return build_local_federation(make_config(doc, algorithm=algorithm), tiny_federation())


def uploads_of(step_uploads):
    """A step's uploads by silo, as a list in silo order."""
    return [u for _, u in sorted(step_uploads.items())]


def model_state(client, model=None):
    return {k: v.detach().clone() for k, v in (model or client.model).state_dict().items()}


# ============================================================================= FedRoD
def test_fedrod_step_matches_the_hand_computation():
    client = client_of("FedRoD", tiny_context(lr=0.1))
    client.local_step(step_info(1, 1, client.ctx.schedule))
    x, y = inputs(), LABELS
    r = x @ A0.T
    z = r @ H0.T
    counts = torch.tensor([3.0, 0.0, 1.0])
    balanced = counts * torch.exp(z) / (counts * torch.exp(z)).sum(1, keepdim=True)  # n_c e^z_c / sum_j n_j e^z_j
    dz = (balanced - torch.eye(3)[y]) / 4
    expected_h = H0 - 0.1 * dz.T @ r
    expected_a = A0 - 0.1 * (dz @ H0).T @ x
    dp = ce_logit_grad(z + r @ H0.T, y)  # personal head starts as a copy of H0
    expected_p = H0 - 0.1 * dp.T @ r
    torch.testing.assert_close(client.model.fc2.weight, expected_h)
    torch.testing.assert_close(client.model.fc1.weight, expected_a)
    torch.testing.assert_close(client.personal_head.weight, expected_p)
    logits, _ = client.reported_model()(x)
    r1 = x @ expected_a.T
    torch.testing.assert_close(logits, r1 @ expected_h.T + r1 @ expected_p.T)


def test_fedrod_personal_head_stays_local_and_survives_the_server(tmp_path):
    parties = participants(tmp_path, "FedRoD")
    drive_one_step(parties)  # handshake
    uploads = uploads_of(drive_one_step(parties))
    heads = {s: parties.clients[s].personal_head.weight.detach().clone() for s in SILOS}
    parties.deliver()
    model_keys = set(parties.clients[0].model.state_dict())
    for s in SILOS:
        client = parties.clients[s]
        assert set(uploads[s]) == PROTOCOL | {"state", "loss"} and set(uploads[s]["state"]) == model_keys
        assert torch.equal(client.personal_head.weight, heads[s])  # the server's message did not touch it
        assert not torch.equal(client.personal_head.weight, client.model.fc2.weight)
    assert not torch.equal(heads[0], heads[1])
    assert all(torch.equal(parties.clients[0].model.fc2.weight, parties.clients[s].model.fc2.weight) for s in SILOS)


def test_fedrod_runs_per_pixel_on_segmentation_with_upsampled_personal_logits():
    from fedml_prr.algorithms.fedrod import personal_logits
    head = nn.Conv2d(4, 2, 1)
    small, like = torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 8, 8)
    out = personal_logits(head, small, like)
    assert out.shape == like.shape
    torch.testing.assert_close(out[..., 0, 0], head(small)[..., 0, 0])  # corner pixel = corner cell (align_corners False)


# ============================================================================= FedALA
def test_top_layer_keys_count_layers_from_the_classifier():
    from fedml_prr.models import build_model
    vgg = build_model("vgg16_slim", num_classes=3, width=0.25)
    assert top_layer_keys(vgg, 1) == ["fc2.weight"]
    assert top_layer_keys(vgg, 2) == ["bn_fc1.weight", "bn_fc1.bias", "fc2.weight"]
    with pytest.raises(ValueError, match="layers with parameters"):
        top_layer_keys(TwoLayer(), 3)


def test_ala_weight_step_matches_the_hand_computation():
    local = TwoLayer()
    g_a, g_h = A0 + 0.3, torch.tensor([[0.9, 0.1], [-0.9, 0.8], [0.1, -0.4]])
    global_state = {"fc1.weight": g_a, "fc2.weight": g_h}
    x, y = inputs(), LABELS
    result = adaptive_local_aggregation(local, global_state, None, lambda: [(x, y)], nn.functional.cross_entropy,
                                        top_keys=["fc2.weight"], eta=2.0, until_converged=False)
    r = x @ g_a.T  # lower layer: the global one
    t0 = H0 + (g_h - H0) * 1.0  # W starts at ones
    grad = ce_logit_grad(r @ t0.T, y).T @ r
    w1 = torch.clamp(1.0 - 2.0 * grad * (g_h - H0), 0.0, 1.0)
    assert (w1 < 1).any() and (w1 == 1).any()  # the step moved some weights and clipped others
    torch.testing.assert_close(result.weights["fc2.weight"], w1)
    torch.testing.assert_close(result.state["fc2.weight"], H0 + (g_h - H0) * w1)
    assert torch.equal(result.state["fc1.weight"], g_a) and result.epochs == 1
    assert torch.equal(local.fc2.weight, H0) and torch.equal(local.fc1.weight, A0)  # inputs untouched
    # the next round starts from the learned W, not from ones
    again = adaptive_local_aggregation(local, global_state, result.weights, lambda: [(x, y)],
                                       nn.functional.cross_entropy, top_keys=["fc2.weight"], eta=0.0,
                                       until_converged=False)
    torch.testing.assert_close(again.state["fc2.weight"], H0 + (g_h - H0) * w1)


def test_ala_first_time_trains_until_the_loss_settles_or_the_bound():
    local, x, y = TwoLayer(), inputs(), LABELS
    state = {"fc1.weight": A0 - 0.2, "fc2.weight": H0 * -1.0}
    kwargs = dict(top_keys=["fc2.weight"], eta=0.5, until_converged=True, num_pre_loss=4)
    loose = adaptive_local_aggregation(local, state, None, lambda: [(x, y)], nn.functional.cross_entropy,
                                       threshold=10.0, max_epochs=50, **kwargs)
    assert loose.epochs == 5  # the first epoch with more than num_pre_loss losses
    never = adaptive_local_aggregation(local, state, None, lambda: [(x, y)], nn.functional.cross_entropy,
                                       threshold=0.0, max_epochs=7, **kwargs)
    assert never.epochs == 7 and len(set(never.losses)) > 1
    torch.testing.assert_close(never.weights["fc2.weight"],
                               adaptive_local_aggregation(local, state, None, lambda: [(x, y)] * 7,
                                                          nn.functional.cross_entropy, top_keys=["fc2.weight"],
                                                          eta=0.5, until_converged=False).weights["fc2.weight"])


def test_fedala_keeps_its_weights_and_top_layer_local(tmp_path):
    parties = participants(tmp_path, "FedALA", prr_ala_num_pre_loss=2, prr_ala_max_start_epochs=6)
    drive_one_step(parties)  # handshake
    uploads = uploads_of(drive_one_step(parties))
    local_top = {s: parties.clients[s].model.fc2.weight.detach().clone() for s in SILOS}
    parties.deliver()  # first global model: ALA's initial stage
    sent = parties.coordinator.server.global_state
    for s in SILOS:
        client = parties.clients[s]
        assert set(uploads[s]) == PROTOCOL | {"state", "loss"}
        state = client.model.state_dict()
        assert all(torch.equal(state[k], sent[k]) for k in state if k != "fc2.weight")  # lower layers + buffers
        w = client.ala_weights["fc2.weight"]
        torch.testing.assert_close(state["fc2.weight"], local_top[s] + (sent["fc2.weight"] - local_top[s]) * w)
        assert ((w >= 0) & (w <= 1)).all() and (w < 1).any()
        assert client.ala_epochs > 1
    drive_one_step(parties)
    parties.deliver()
    assert [parties.clients[s].ala_epochs for s in SILOS] == [1, 1, 1]  # one epoch after the initial stage


# ============================================================================= SCAFFOLD
def test_steps_per_epoch_follow_the_training_batches():
    assert [optimizer_steps_per_epoch(n, 8) for n in (16, 17, 18, 3)] == [2, 2, 3, 1]


def test_scaffold_step_and_option_ii_match_the_hand_computation():
    client = client_of("SCAFFOLD", tiny_context(lr=0.1))
    c = {"fc1.weight": torch.full((2, 3), 0.2), "fc2.weight": torch.tensor([[0.1, 0.0], [0.0, -0.3], [0.5, 0.2]])}
    c_i = {"fc1.weight": torch.full((2, 3), -0.1), "fc2.weight": torch.full((3, 2), 0.05)}
    client.server_control, client.control = c, {k: v.clone() for k, v in c_i.items()}
    client.local_step(step_info(1, 1, client.ctx.schedule))
    x, y = inputs(), LABELS
    r = x @ A0.T
    dz = ce_logit_grad(r @ H0.T, y)
    g = {"fc2.weight": dz.T @ r, "fc1.weight": (dz @ H0).T @ x}
    start = {"fc1.weight": A0, "fc2.weight": H0}
    for k in start:
        y_k = start[k] - 0.1 * (g[k] + c[k] - c_i[k])
        torch.testing.assert_close(client.model.state_dict()[k], y_k)
        # option II with K = 1: c_i+ = c_i - c + (x - y) / lr = g
        torch.testing.assert_close(client.control[k], g[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(client.control_delta[k], client.control[k] - c_i[k])


def _scaffold_server(num_clients, **params):
    schedule = TrainSchedule(rounds=3, epochs=1)
    spec = get_algorithm("SCAFFOLD")
    server = spec.server(num_clients, schedule, spec.params(**params), 0)
    server.initial_state = {"w": torch.tensor([1.0, 1.0]), "m": torch.tensor([0.5]), "n": torch.tensor(0)}
    return server


def _scaffold_upload(silo, step, n, delta, control_delta, m, count):
    return {"silo": silo, "step": step, "num_samples": n, "delta": {"w": torch.tensor(delta)},
            "control_delta": {"w": torch.tensor(control_delta)},
            "buffers": {"m": torch.tensor([m]), "n": torch.tensor(count)}}


def test_scaffold_server_applies_weighted_differences():
    server = _scaffold_server(2, scaffold_global_lr=0.5)
    assert isinstance(server, ScaffoldServer)
    server.aggregate(0, {0: {"silo": 0, "step": 0, "num_samples": 1, "class_counts": torch.tensor([1, 0])},
                         1: {"silo": 1, "step": 0, "num_samples": 3, "class_counts": torch.tensor([0, 3])}})
    assert server.messages(1)[0].keys() == {"silo", "step", "final", "global_class_counts"}  # nothing before round 0
    uploads = {0: _scaffold_upload(0, 1, 1, [4.0, 0.0], [1.0, 2.0], 0.0, 3),
               1: _scaffold_upload(1, 1, 3, [0.0, 8.0], [-1.0, 6.0], 4.0, 5)}
    server.aggregate(1, uploads)
    message = server.messages(2)[1]
    # x = x0 + 0.5 (1/4 d0 + 3/4 d1) = [1, 1] + 0.5 [1, 6]; buffers averaged with the same weights (counts: max)
    torch.testing.assert_close(message["global"]["w"], torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(message["global"]["m"], torch.tensor([3.0]))
    assert int(message["global"]["n"]) == 5
    torch.testing.assert_close(message["control"]["w"], torch.tensor([-0.5, 5.0]))  # 1/4 dc0 + 3/4 dc1
    server.aggregate(2, {s: dict(u, step=2) for s, u in uploads.items()})
    torch.testing.assert_close(server.messages(3)[0]["global"]["w"], torch.tensor([2.0, 7.0]))
    torch.testing.assert_close(server.messages(3)[0]["control"]["w"], torch.tensor([-1.0, 10.0]))  # c accumulates
    uniform = _scaffold_server(2, scaffold_sample_weighted=False)
    uniform.aggregate(1, uploads)
    torch.testing.assert_close(uniform.global_state["w"], torch.tensor([3.0, 5.0]))  # [1, 1] + (d0 + d1) / 2


def test_scaffold_server_with_a_silo_absent_moves_c_by_the_present_share():
    server = _scaffold_server(3)
    server.aggregate(0, {s: {"silo": s, "step": 0, "num_samples": n, "class_counts": torch.tensor([n, 0])}
                         for s, n in ((0, 1), (1, 3), (2, 4))})
    server.aggregate(1, {0: _scaffold_upload(0, 1, 1, [4.0, 0.0], [1.0, 2.0], 0.0, 3),
                         1: _scaffold_upload(1, 1, 3, [0.0, 8.0], [-1.0, 6.0], 4.0, 5)})  # silo 2 missed the round
    torch.testing.assert_close(server.global_state["w"], torch.tensor([2.0, 7.0]))  # x0 + (1/4 d0 + 3/4 d1)
    # c: (n0 dc0 + n1 dc1) / (n0 + n1 + n2) = (1/8) [1, 2] + (3/8) [-1, 6]
    torch.testing.assert_close(server.control["w"], torch.tensor([-0.25, 2.5]))
    assert set(server.messages(2)) == {0, 1, 2}  # the absent silo gets x and c like the others at its return


def test_scaffold_first_round_is_fedavg_then_the_control_variates_act(tmp_path):
    runs = {name: participants(tmp_path / name, name) for name in ("FedAvg", "SCAFFOLD")}
    for parties in runs.values():
        drive_one_step(parties)
    fedavg_uploads = collect_uploads(runs["FedAvg"])
    scaffold_uploads = collect_uploads(runs["SCAFFOLD"])
    parties = runs["SCAFFOLD"]
    for s in SILOS:  # c = c_i = 0: the same local training, bit for bit
        params = dict(parties.clients[s].model.named_parameters())
        assert all(torch.equal(fedavg_uploads[s]["state"][k], p.detach()) for k, p in params.items())
        assert set(scaffold_uploads[s]) == PROTOCOL | {"delta", "buffers", "control_delta", "loss"}
        assert set(scaffold_uploads[s]["control_delta"]) == set(params)  # parameters only, buffers averaged
    for name, uploads in (("FedAvg", fedavg_uploads), ("SCAFFOLD", scaffold_uploads)):
        runs[name].coordinator.aggregate(uploads)
        runs[name].deliver()
    for k, v in runs["FedAvg"].clients[0].model.state_dict().items():
        torch.testing.assert_close(parties.clients[0].model.state_dict()[k], v, atol=1e-6, rtol=1e-6)
    controls = {s: {k: v.clone() for k, v in parties.clients[s].control.items()} for s in SILOS}
    assert not torch.equal(controls[0]["fc2.weight"], controls[1]["fc2.weight"])
    for name in runs:
        drive_one_step(runs[name])
        runs[name].deliver()
    for s in SILOS:
        assert all(torch.equal(parties.clients[0].model.state_dict()[k], v)  # every client holds x
                   for k, v in parties.clients[s].model.state_dict().items())
    difference = (runs["FedAvg"].clients[0].model.fc2.weight - parties.clients[0].model.fc2.weight).abs().max()
    assert difference > 1e-4  # the corrections changed round 1


def test_scaffold_client_control_is_never_overwritten_by_the_server(tmp_path):
    parties = participants(tmp_path, "SCAFFOLD")
    drive_one_step(parties)
    drive_one_step(parties)
    before = {s: {k: v.clone() for k, v in parties.clients[s].control.items()} for s in SILOS}
    messages = parties.coordinator.messages()
    assert set(messages[0]) == {"silo", "step", "final", "global", "control", "global_class_counts"}
    parties.deliver()
    for s in SILOS:
        assert all(torch.equal(parties.clients[s].control[k], before[s][k]) for k in before[s])
        torch.testing.assert_close(parties.clients[s].server_control["fc2.weight"], messages[s]["control"]["fc2.weight"])


# ============================================================================= FedAvg-FT
def test_fedavg_ft_fine_tunes_a_copy_by_hand():
    client = client_of("FedAvg-FT", tiny_context(lr=0.2), fedavg_ft_epochs=1)
    g_a, g_h = A0 + 0.1, H0 - 0.2
    client.receive({"silo": 0, "step": 2, "final": False, "global": {"fc1.weight": g_a, "fc2.weight": g_h}})
    reported = client.reported_model()
    x, y = inputs(), LABELS
    r = x @ g_a.T
    dz = ce_logit_grad(r @ g_h.T, y)
    torch.testing.assert_close(reported.fc2.weight, g_h - 0.2 * dz.T @ r)
    torch.testing.assert_close(reported.fc1.weight, g_a - 0.2 * (dz @ g_h).T @ x)
    assert reported is client.finetuned and torch.equal(client.model.fc2.weight, g_h)  # the copy moved, not the model
    tuned = reported.fc2.weight.detach().clone()
    assert torch.equal(client.reported_model().fc2.weight, tuned)  # cached: not fine-tuned twice


def test_fedavg_ft_uploads_are_fedavgs_and_the_fine_tuned_copy_stays_local(tmp_path):
    runs = {name: participants(tmp_path / name, name) for name in ("FedAvg", "FedAvg-FT")}
    uploads = {name: [] for name in runs}
    for _ in range(3):  # handshake + two rounds
        for name, parties in runs.items():
            uploads[name] += uploads_of(drive_one_step(parties))
    for a, b in zip(uploads["FedAvg"], uploads["FedAvg-FT"]):
        assert a.keys() == b.keys()
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a.get("state", {}))
    client = runs["FedAvg-FT"].clients[0]
    assert client.reported_model() is client.finetuned
    assert not torch.equal(client.finetuned.fc2.weight, client.model.fc2.weight)


def test_fedavg_ft_with_zero_epochs_reports_exactly_fedavg(tmp_path):
    import json
    from fedml_prr.api import run

    lines = {}
    for name, extra in (("FedAvg", {}), ("FedAvg-FT", {"prr_fedavg_ft_epochs": 0})):
        doc = copy.deepcopy(TINY)
        doc["train_args"]["epochs"] = 1
        doc["prr_args"].update(extra, prr_results_dir=str(tmp_path / name))
        run(make_config(doc, algorithm=name), federation=tiny_federation())
        lines[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert lines["FedAvg"] == lines["FedAvg-FT"]


# ============================================================================= engine and validator
@pytest.mark.parametrize("name", ["FedALA", "FedAvg-FT"])
def test_batched_engine_trains_fedala_and_fedavg_ft_as_the_loop(tmp_path, name):
    federations = {}
    for engine, extra in (("loop", {}), ("batched", {"prr_engine": "batched", "prr_conv_mode": "per_slot",
                                                     "prr_channels_last": False})):
        parties = participants(tmp_path / engine, name, prr_ala_max_start_epochs=3, **extra)
        for _ in range(3):  # handshake, round 0, round 1 (after the first global model: ALA, fine-tuning)
            drive_one_step(parties)
        federations[engine] = parties
    worst = 0.0
    for s in SILOS:
        for key, model in federations["loop"].clients[s].models.items():
            other = federations["batched"].clients[s].models[key].state_dict()
            worst = max(worst, max((v.double() - other[k].double()).abs().max().item()
                                   for k, v in model.state_dict().items()))
    assert worst <= 1e-6  # per-slot convolutions: the loop's kernels on the loop's numbers


@pytest.mark.parametrize("name, kind", [("FedRoD", "FedRoDClient"), ("SCAFFOLD", "ScaffoldClient")])
def test_batched_engine_refuses_fedrod_and_scaffold(tmp_path, name, kind):
    with pytest.raises(ValueError, match=f"does not support {kind}"):
        participants(tmp_path, name, prr_engine="batched")


@pytest.mark.parametrize("name, field, key", [("SCAFFOLD", "control_delta", "fc2.weight"),
                                              ("SCAFFOLD", "delta", "fc1.weight"),
                                              ("FedRoD", "state", "fc2.weight"),
                                              ("FedALA", "state", "fc2.weight"),
                                              ("FedAvg-FT", "state", "fc2.weight")])
def test_validator_accepts_genuine_uploads_and_rejects_corrupt_ones(tmp_path, name, field, key):
    parties = participants(tmp_path, name)
    drive_one_step(parties)
    uploads = collect_uploads(parties)
    for corruption, words in (("nan", "non-finite"), ("shape", "shape")):
        bad = {silo: dict(u) for silo, u in uploads.items()}
        values = dict(bad[1][field])
        values[key] = values[key].clone()
        if corruption == "nan":
            values[key].view(-1)[0] = float("nan")
        else:
            values[key] = values[key][..., :-1].clone()
        bad[1][field] = values
        with pytest.raises(UpdateError, match=f"silo 1 at step 1.*{words}"):
            parties.coordinator.aggregate(bad)
    parties.coordinator.aggregate(uploads)
    assert parties.coordinator.step == 2


@pytest.mark.parametrize("name", ["FedRoD", "FedALA", "SCAFFOLD", "FedAvg-FT"])
def test_resume_after_round_0_ends_with_the_same_metrics(tmp_path, monkeypatch, name):
    import json
    from fedml_prr.api import run
    from fedml_prr.runtime import sp

    def config(folder):
        doc = copy.deepcopy(TINY)
        doc["train_args"].update(epochs=1, comm_round=3)
        doc["prr_args"]["prr_results_dir"] = str(folder)
        return make_config(doc, algorithm=name)

    fed = tiny_federation()
    run(config(tmp_path / "full"), federation=fed)

    class Interrupt(Exception):
        pass

    save = sp.ResultsStore.save_resume

    def save_then_stop(self, state):  # the algorithm's state after round 0 goes to disk, then the run dies
        save(self, state)
        raise Interrupt()

    with monkeypatch.context() as patch:
        patch.setattr(sp.ResultsStore, "save_resume", save_then_stop)
        with pytest.raises(Interrupt):
            run(config(tmp_path / "cut"), federation=fed)
    run(config(tmp_path / "cut"), federation=fed, resume=True)
    lines = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in ("full", "cut")}
    assert len(lines["full"]) == 9 and lines["full"] == lines["cut"]


def wire_types(value, where="message"):
    """Every leaf a tensor, number, string or bool; every mapping keyed by strings (or silo ints)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, (str, int)), (where, key)
            wire_types(item, f"{where}[{key!r}]")
    else:
        assert isinstance(value, (torch.Tensor, bool, int, float, str)), (where, type(value).__name__)


@pytest.mark.parametrize("name", ["FedRoD", "FedALA", "SCAFFOLD", "FedAvg-FT"])
def test_messages_and_uploads_hold_only_wire_types(tmp_path, name):
    parties = participants(tmp_path, name, prr_ala_max_start_epochs=2)
    for _ in range(3):
        wire_types(parties.coordinator.messages())
        for upload in drive_one_step(parties).values():
            wire_types(upload, "upload")
    wire_types(parties.coordinator.messages())
