"""The server rejects bad updates before aggregating, naming the silo, and loses no state."""

import copy

import pytest
import torch

from fedml_prr.api import make_config
from fedml_prr.runtime.sp import build_local_federation
from fedml_prr.training.validation import UpdateError

from fedtiny import TINY, collect_uploads, drive_one_step, tiny_federation

SILOS = [0, 1, 2]


def participants(tmp_path, algorithm="PRR"):
    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    return build_local_federation(make_config(doc, algorithm=algorithm), tiny_federation())


def server_snapshot(server):
    return copy.deepcopy(server.state_dict())


def assert_same_state(a, b):
    def flat(x, prefix=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from flat(v, f"{prefix}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                yield from flat(v, f"{prefix}/{i}")
        else:
            yield prefix, x
    fa, fb = dict(flat(a)), dict(flat(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def corrupt_nan(upload):
    upload["deputy"] = dict(upload["deputy"])
    w = upload["deputy"]["fc2.weight"].clone()
    w[0, 0] = float("nan")
    upload["deputy"]["fc2.weight"] = w


def corrupt_shape(upload):
    upload["deputy"] = dict(upload["deputy"])
    upload["deputy"]["fc2.weight"] = upload["deputy"]["fc2.weight"][:, :-1].clone()


def corrupt_dtype(upload):
    upload["deputy"] = dict(upload["deputy"])
    upload["deputy"]["fc2.weight"] = upload["deputy"]["fc2.weight"].double()


def corrupt_unknown_key(upload):
    upload["deputy"] = dict(upload["deputy"], **{"extra.weight": torch.zeros(2)})


def corrupt_missing_key(upload):
    upload["deputy"] = {k: v for k, v in upload["deputy"].items() if k != "fc2.weight"}


def corrupt_missing_field(upload):
    del upload["deputy"]


def corrupt_samples(upload):
    upload["num_samples"] = upload["num_samples"] + 1


def corrupt_prototype(upload):
    upload["prototypes"] = upload["prototypes"].clone()
    upload["prototypes"][0, 0] = float("inf")


@pytest.fixture(scope="module")
def prr_at_round_end(tmp_path_factory):
    """PRR participants about to aggregate the deputies of round 0 (shared: a rejected update must
    leave them untouched, which every test below checks)."""
    parties = participants(tmp_path_factory.mktemp("prr"))
    drive_one_step(parties)  # handshake
    drive_one_step(parties)  # round 0 epoch 0
    uploads = collect_uploads(parties)  # round 0 epoch 1: deputies uploaded
    return parties.coordinator, uploads


@pytest.mark.parametrize("corrupt, words", [
    (corrupt_nan, "non-finite"), (corrupt_shape, "shape"), (corrupt_dtype, "float64"),
    (corrupt_unknown_key, "does not have"), (corrupt_missing_key, "missing or extra"),
    (corrupt_missing_field, "missing field"), (corrupt_samples, "num_samples"),
    (corrupt_prototype, "non-finite"),
])
def test_a_corrupt_prr_update_is_rejected_naming_the_silo_and_state_survives(prr_at_round_end, corrupt, words):
    coordinator, uploads = prr_at_round_end
    before, step = server_snapshot(coordinator.server), coordinator.step
    bad = {silo: dict(u) for silo, u in uploads.items()}
    corrupt(bad[1])
    with pytest.raises(UpdateError) as err:
        coordinator.aggregate(bad)
    assert "silo 1" in str(err.value) and words in str(err.value)
    assert err.value.silo == 1 and coordinator.step == step
    assert_same_state(server_snapshot(coordinator.server), before)


def test_an_algorithm_failing_half_way_leaves_the_server_state_unchanged(prr_at_round_end, monkeypatch):
    coordinator, uploads = prr_at_round_end
    before, step = server_snapshot(coordinator.server), coordinator.step
    server = coordinator.server

    def half_way(self, info, ups):
        self.global_protos = torch.zeros_like(self.global_protos)  # state touched, then a failure
        raise RuntimeError("FFT failed")

    with monkeypatch.context() as patch:
        patch.setattr(type(server), "aggregate_step", half_way)
        with pytest.raises(RuntimeError, match="FFT failed"):
            coordinator.aggregate(uploads)
    assert_same_state(server_snapshot(server), before)
    assert coordinator.step == step


def test_after_rejections_the_genuine_uploads_still_aggregate(prr_at_round_end):
    coordinator, uploads = prr_at_round_end
    step = coordinator.step
    for corrupt in (corrupt_nan, corrupt_missing_field, corrupt_samples):  # rejected first, here
        bad = {silo: dict(u) for silo, u in uploads.items()}
        corrupt(bad[2])
        with pytest.raises(UpdateError, match="silo 2"):
            coordinator.aggregate(bad)
    assert coordinator.step == step and coordinator.server.deputies == {}
    coordinator.aggregate(uploads)
    assert set(coordinator.server.deputies) == set(SILOS) and coordinator.step == step + 1
    genuine = uploads[2]["deputy"]["fc2.weight"]
    assert torch.isfinite(coordinator.server.deputies[2]["fc2.weight"]).all() and genuine.isfinite().all()


def test_bad_handshake_counts_are_rejected(tmp_path):
    parties = participants(tmp_path, "FedAvg")
    uploads = collect_uploads(parties)
    uploads[2]["class_counts"] = torch.tensor([1, -1, 0])
    with pytest.raises(UpdateError, match="silo 2 at step 0"):
        parties.coordinator.aggregate(uploads)
    assert parties.coordinator.server.global_class_counts is None


def test_centralized_uploads_differ_per_silo_and_are_accepted(tmp_path):
    parties = participants(tmp_path, "Centralized")
    drive_one_step(parties)
    drive_one_step(parties)
    assert parties.coordinator.step == 2
