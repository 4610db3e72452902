"""Our runtime's FedAvg against FedML 0.9.6's own single-process FedAvg on the same federation.

Both runs share the data, the initial weights (``model_factory``), the seed and the schedule:
4 non-IID clients of a separable 3-class task, vgg16_slim (width 0.25, 32 px), 3 rounds x
2 local epochs, plain SGD (lr 0.02, batch 16, no momentum, no weight decay, no lr decay), no
augmentation - everything FedML's ``ModelTrainerCLS`` can express.  FedML runs through its own
code path (``FedMLRunner`` -> ``SimulatorSingleProcess`` -> ``FedAvgAPI`` -> ``ModelTrainerCLS``);
the final global models of both are evaluated per client with our ``evaluate``.

Measured on this project's CPU machine (1 torch thread), client-averaged test accuracy / macro-F1:

=====  ===============  ================  ========================  ===========================
seed   ours             FedML, matched    FedML, independent order  independent - ours
=====  ===============  ================  ========================  ===========================
0      1.0000 / 1.0000  1.0000 / 1.0000   0.9875 / 0.9743           -0.0125 / -0.0257
1      0.9625 / 0.9375  0.9625 / 0.9375   0.9250 / 0.8928           -0.0375 / -0.0447
2      0.9938 / 0.9880  0.9938 / 0.9880   0.9938 / 0.9948           +0.0000 / +0.0068
3      1.0000 / 1.0000  1.0000 / 1.0000   0.9938 / 0.9818           -0.0062 / -0.0182
4      1.0000 / 1.0000  1.0000 / 1.0000   1.0000 / 1.0000           +0.0000 / +0.0000
=====  ===============  ================  ========================  ===========================

*Matched batch order* (FedML's loaders shuffle with our clients' generators): the final weights
were bit-identical on every seed.  The tolerance, weights within 1e-5 and metrics within 0.01,
only leaves room for float re-association on other hardware/BLAS (the two servers sum the
clients in different code).
*Independent batch order* (FedML's loaders shuffle with their own streams): the largest
difference over 5 seeds was 0.0375 accuracy and 0.045 macro-F1; the tolerance is twice that,
0.075 and 0.09.  Predicting each client's majority training class scores 0.49 accuracy and
0.21 macro-F1 (client average; uniform guessing 0.33); every run must reach 0.85 accuracy and
0.80 macro-F1, so a broken runtime fails the test even when the two agree.
"""

import pytest
import torch
from torch import nn

from fedml_prr.api import make_config, run
from fedml_prr.data.federation import ClientData, Federation, ImageSplit
from fedml_prr.fedml_adapter.fedml_native import (
    LogitsOnly, TrainingBatchSampler, client_shuffle_generator, fedml_dataset, run_fedml_fedavg,
)
from fedml_prr.runtime.sp import build_local_federation
from fedml_prr.training.loops import batch_indices

SEED = 0
MATCHED_WEIGHT_ATOL = 1e-5
MATCHED_METRIC_TOL = 0.01
INDEPENDENT_TOL = {"accuracy": 0.075, "macro_f1": 0.09}
FLOOR = {"accuracy": 0.85, "macro_f1": 0.80}

MIXES = {"A": (0.6, 0.3, 0.1), "B": (0.2, 0.5, 0.3), "C": (0.1, 0.2, 0.7), "D": (0.34, 0.33, 0.33)}


def _split(n, gen, mix, signal=40):
    """Noise images whose label's colour channel is brighter by ``signal`` (of 255)."""
    labels = torch.multinomial(torch.tensor(mix), n, replacement=True, generator=gen)
    images = torch.randint(0, 256 - signal, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images[torch.arange(n), labels] += signal
    return ImageSplit(images, labels)


def separable_federation():
    gen = torch.Generator().manual_seed(1234)
    clients = [ClientData(name, _split(64 + 8 * i, gen, mix), _split(16, gen, mix), _split(40, gen, mix))
               for i, (name, mix) in enumerate(MIXES.items())]
    return Federation("separable", ("a", "b", "c"), tuple(clients))


def crosscheck_config(results_dir, seed=SEED, **overrides):
    return make_config(None, algorithm="FedAvg", overrides={
        "random_seed": seed, "comm_round": 3, "epochs": 2, "batch_size": 16, "learning_rate": 0.02,
        "weight_decay": 0.0, "momentum": 0.0, "prr_lr_decay_every": 1000, "prr_augment": False,
        "prr_image_size": 32, "prr_model_options": {"width": 0.25}, "prr_device": "cpu",
        "prr_results_dir": str(results_dir), **overrides})


@pytest.fixture(scope="module")
def one_thread():
    """1 torch thread: fast on a small model, immune to oversubscription, same numbers on any core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    from fedml.ml.trainer.my_model_trainer_classification import ModelTrainerCLS

    federation = separable_federation()
    config = crosscheck_config(tmp_path_factory.mktemp("ours"))
    ours = run(config, federation=federation)
    ours_weights = torch.load(f"{ours.results_dir}/checkpoints/last/A.pt")

    calls = []
    original_train = ModelTrainerCLS.train

    def counting_train(self, train_data, device, args):
        calls.append(self.id)
        return original_train(self, train_data, device, args)

    with pytest.MonkeyPatch.context() as patch:  # proves FedML's own trainer did the training
        patch.setattr(ModelTrainerCLS, "train", counting_train)
        matched = run_fedml_fedavg(config, federation, match_batch_order=True)
    independent = run_fedml_fedavg(config, federation, match_batch_order=False)
    return {"config": config, "federation": federation, "ours": ours.summary["final"],
            "ours_weights": ours_weights, "matched": matched, "independent": independent, "fedml_calls": calls}


def test_fedml_trained_every_client_every_round(runs):
    rounds, clients = runs["config"].schedule.rounds, len(runs["federation"].clients)
    assert runs["fedml_calls"] == list(range(clients)) * rounds


def test_matched_batch_order_gives_the_same_model_and_metrics(runs):
    ours_w, fedml_w = runs["ours_weights"], runs["matched"].model.state_dict()
    assert set(ours_w) == set(fedml_w)
    worst = max(float((ours_w[k] - fedml_w[k]).abs().max()) for k in ours_w if ours_w[k].is_floating_point())
    assert worst <= MATCHED_WEIGHT_ATOL, (f"final global weights differ by up to {worst:.3g} (does our FedAvg "
                                         "honour prr_augment: false?)")
    for name, metrics in runs["ours"]["clients"].items():
        for metric in ("accuracy", "macro_f1"):
            assert abs(metrics["test"][metric] - runs["matched"].clients[name]["test"][metric]) <= MATCHED_METRIC_TOL
    for metric in ("accuracy", "macro_f1"):
        assert abs(runs["ours"]["mean"][metric] - runs["matched"].mean[metric]) <= MATCHED_METRIC_TOL


def test_independent_batch_order_agrees_within_tolerance(runs):
    for metric, tol in INDEPENDENT_TOL.items():
        ours, fedml = runs["ours"]["mean"][metric], runs["independent"].mean[metric]
        assert abs(ours - fedml) <= tol, f"{metric}: ours {ours:.4f}, FedML {fedml:.4f}"


def test_both_runtimes_learn_the_task(runs):
    for metric, floor in FLOOR.items():
        assert runs["ours"]["mean"][metric] >= floor
        assert runs["matched"].mean[metric] >= floor
        assert runs["independent"].mean[metric] >= floor


# ------------------------------------------------------------------ the adapter's pieces
def test_shuffle_generator_is_the_one_our_clients_use(tmp_path):
    federation = separable_federation()
    parties = build_local_federation(crosscheck_config(tmp_path, seed=3), federation)
    for silo in range(len(federation.clients)):
        assert torch.equal(parties.clients[silo].generator.get_state(), client_shuffle_generator(3, silo).get_state())


def test_batch_sampler_shuffles_like_our_runtime_and_not_while_evaluating():
    sampler = TrainingBatchSampler(35, 16, torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    state = sampler.generator.get_state()
    with torch.no_grad():
        assert list(sampler) == [list(range(0, 16)), list(range(16, 32)), list(range(32, 35))]
    assert torch.equal(sampler.generator.get_state(), state)  # evaluation drew nothing
    for _ in range(2):
        assert list(sampler) == [idx.tolist() for idx in batch_indices(35, 16, reference)]
    assert [len(b) for b in TrainingBatchSampler(33, 16, torch.Generator())] == [16, 16]  # lone sample dropped
    assert len(TrainingBatchSampler(33, 16, torch.Generator())) == 2


def test_fedml_dataset_contract():
    federation = separable_federation()
    train_num, test_num, train_global, test_global, nums, train_local, test_local, classes = \
        fedml_dataset(federation, 16, SEED)
    assert classes == 3 and sorted(train_local) == sorted(test_local) == sorted(nums) == [0, 1, 2, 3]
    assert train_num == sum(len(c.train) for c in federation.clients) == sum(nums.values())
    assert test_num == sum(len(c.test) for c in federation.clients)
    x, y = next(iter(test_local[2]))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64
    assert torch.equal(x, federation.clients[2].test.images[:16].float() / 127.5 - 1)


def test_logits_only_returns_logits_and_a_snapshot_state():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(x), x

    inner = Pair()
    wrapped = LogitsOnly(inner)
    x = torch.randn(4, 2)
    assert torch.equal(wrapped(x), inner(x)[0])
    aliased, snapshot = inner.state_dict(), wrapped.state_dict()
    with torch.no_grad():
        inner.fc.weight.add_(1.0)
    # a plain state_dict follows later in-place training (what makes FedML's round 0 chained) ...
    assert torch.equal(aliased["fc.weight"], inner.fc.weight)
    # ... the wrapper's does not
    assert torch.equal(snapshot["model.fc.weight"] + 1.0, inner.fc.weight)


def test_configs_fedml_cannot_run_are_refused(tmp_path):
    federation = separable_federation()
    for overrides, words in [({"momentum": 0.9}, "momentum"), ({"weight_decay": 1e-4}, "weight_decay"),
                             ({"prr_lr_decay_every": 1}, "decay"), ({"prr_augment": True}, "augment")]:
        with pytest.raises(ValueError, match=words):
            run_fedml_fedavg(crosscheck_config(tmp_path, **overrides), federation)
