"""Client sampling (``client_num_per_round < client_num_in_total``) in one process: FedML's draw,
absent clients' state, evaluation of every client at the end, every algorithm."""

import json

import numpy as np
import pytest
import torch

from fedml_prr.algorithms import ALGORITHMS
from fedml_prr.api import make_config, run
from fedml_prr.config import ConfigError
from fedml_prr.runtime.sp import build_local_federation
from fedml_prr.training.sampling import sample_clients

from fedtiny import TINY, tiny_federation


def config(tmp_path, algorithm="PRR", per_round=2, rounds=3, epochs=1, **prr):
    doc = {"train_args": {**TINY["train_args"], "comm_round": rounds, "epochs": epochs, "client_num_in_total": 3,
                          "client_num_per_round": per_round},
           "prr_args": {**TINY["prr_args"], "prr_results_dir": str(tmp_path / algorithm), **prr}}
    return make_config(doc, algorithm=algorithm)


def test_the_draw_is_fedml_s_and_leaves_numpy_s_global_generator_alone():
    np.random.seed(123)
    expected_next = np.random.RandomState(123).random_sample()
    for round_idx in range(20):
        cohort = sample_clients(round_idx, 100, 10)
        state = np.random.get_state()
        np.random.seed(round_idx)  # FedML's FedAVGAggregator.client_sampling, verbatim
        fedml = np.random.choice(range(100), 10, replace=False)
        np.random.set_state(state)
        assert cohort == sorted(int(i) for i in fedml) and len(set(cohort)) == 10
    np.random.seed(123)
    assert np.random.random_sample() == expected_next
    assert sample_clients(4, 7, None) == sample_clients(4, 7, 7) == list(range(7))


def test_config_accepts_fewer_clients_per_round_and_refuses_more_than_in_total():
    assert make_config({"train_args": {"client_num_in_total": 4, "client_num_per_round": 2}}).clients_per_round == 2
    with pytest.raises(ConfigError, match="client_num_per_round"):
        make_config({"train_args": {"client_num_in_total": 4, "client_num_per_round": 5}})
    with pytest.raises(ConfigError, match="client_num_per_round"):
        make_config({"train_args": {"client_num_in_total": 4, "client_num_per_round": 0}})


def test_prr_trains_the_sampled_cohorts_and_an_absent_client_keeps_its_models(tmp_path):
    parties = build_local_federation(config(tmp_path), tiny_federation())
    c = parties.coordinator
    cohorts = [sample_clients(r, 3, 2) for r in range(3)]  # [[1, 2], [0, 2], [1, 2]]
    assert cohorts[0] != cohorts[1]
    parties.step()  # handshake: every silo
    for round_idx, cohort in enumerate(cohorts):
        absent = [s for s in range(3) if s not in cohort]
        kept = {s: {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in parties.clients[s].models.items()}
                for s in absent}
        for _ in range(c.server.spr):
            uploads = parties.step()
            assert sorted(uploads) == cohort
        for s in absent:  # P_k and D_k untouched while it sits out
            for name, model in parties.clients[s].models.items():
                assert all(torch.equal(v, kept[s][name][k]) for k, v in model.state_dict().items()), (s, name)
    assert c.cohorts == dict(enumerate(cohorts))


def test_a_client_absent_from_a_round_receives_its_own_pfa_deputy_when_next_sampled(tmp_path):
    parties = build_local_federation(config(tmp_path), tiny_federation())
    server, c = parties.coordinator.server, parties.coordinator
    parties.step()  # handshake
    for _ in range(server.spr):  # round 0: silos 1, 2
        parties.step()
    waiting = {k: v.clone() for k, v in server.deputies[1].items()}  # silo 1 is out of round 1
    deputy_before = {k: v.clone() for k, v in parties.clients[1].deputy.state_dict().items()}
    assert not all(torch.equal(waiting[k], deputy_before[k]) for k in waiting if waiting[k].is_floating_point())
    for _ in range(server.spr):  # round 1: silos 0, 2; silo 1 gets nothing
        parties.step()
    assert all(torch.equal(v, deputy_before[k]) for k, v in parties.clients[1].deputy.state_dict().items())
    assert all(torch.equal(server.deputies[1][k], waiting[k]) for k in waiting)
    parties.deliver()  # round 2 starts: silo 1 is back and receives the deputy made for it after round 0
    assert all(torch.equal(v, waiting[k]) for k, v in parties.clients[1].deputy.state_dict().items())
    assert parties.clients[1].global_protos is not None and torch.equal(parties.clients[1].global_protos,
                                                                        server.global_protos)


def test_every_client_is_evaluated_at_the_end_and_the_cohorts_are_recorded(tmp_path):
    result = run(config(tmp_path), federation=tiny_federation(), overwrite=True)
    cohorts = [sample_clients(r, 3, 2) for r in range(3)]
    assert result.summary["sampling"]["cohorts"] == cohorts
    assert result.summary["sampling"]["client_num_per_round"] == 2
    records = [json.loads(line) for line in (tmp_path / "PRR" / "metrics.jsonl").read_text().splitlines()]
    by_round = {r: sorted(x["silo"] for x in records if x["round"] == r) for r in range(3)}
    assert by_round[0] == cohorts[0] and by_round[1] == cohorts[1]
    assert by_round[2] == [0, 1, 2]  # the last round: every client, silo 0 evaluated without training it
    last = {x["silo"]: x for x in records if x["round"] == 2}
    assert last[0]["took_part"] is False and last[0]["missed_rounds"] == [2]
    assert "took_part" not in last[1] and last[1]["missed_rounds"] == [1]
    # silo 1 sits out round 1: it records round 0 as soon as it trained it, receiving nothing
    first = {x["silo"]: x for x in records if x["round"] == 0}
    assert first[1]["received"] is False and first[1]["retrogress"] is None  # NaN, written as null
    # PRR's diagnosis of that round is recorded too: the deputy it trained, none received
    assert first[1]["deputy_received"] is False and first[1]["f1_deputy_valid_before_receive"] is not None
    assert any(x["deputy_received"] for x in first.values() if x.get("received", True))
    assert "received" not in first[2]
    assert sorted(result.summary["final"]["clients"]) == ["A", "B", "C"]
    table = (tmp_path / "PRR" / "federation.txt").read_text().splitlines()  # each client's split, by class
    assert table[0].startswith("tiny: 3 clients") and any(line.split()[:2] == ["C", "test"] for line in table)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS.names() if not ALGORITHMS.get(a).client.NEEDS_POOLED_DATA])
def test_every_algorithm_runs_a_sampled_round(tmp_path, algorithm):
    parties = build_local_federation(config(tmp_path, algorithm, per_round=1, rounds=2), tiny_federation())
    c = parties.coordinator
    parties.step()
    for _ in range(c.server.spr):
        assert sorted(parties.step()) == sample_clients(0, 3, 1)
    assert c.cohorts[0] == sample_clients(0, 3, 1)


def test_the_centralized_reference_refuses_sampling(tmp_path):
    with pytest.raises(ValueError, match="client_num_per_round"):
        build_local_federation(config(tmp_path, "Centralized"), tiny_federation())


def test_absent_clients_leave_the_training_device_and_the_batched_engine_trains_the_cohort(tmp_path):
    # The batched engine under sampling: one engine per round holding the round's clients only (2 slots
    # each for PRR), absent clients outside it, on the CPU, without optimizers; the loop engine
    # trains the same cohorts to the same weights (per-slot convolutions: the loop's kernels)
    engine = dict(prr_engine="batched", prr_conv_mode="per_slot", prr_channels_last=False)
    loop = build_local_federation(config(tmp_path / "loop", rounds=2), tiny_federation())
    batched = build_local_federation(config(tmp_path / "batched", rounds=2, **engine), tiny_federation())
    for parties in (loop, batched):
        parties.step()  # handshake
    for round_idx in range(2):
        cohort = sample_clients(round_idx, 3, 2)
        for _ in range(batched.coordinator.server.spr):
            loop.step()
            batched.step()
            engine_now = batched.clients[cohort[0]].cohort
            assert sorted(c.ctx.silo for c in engine_now.members) == cohort
            assert engine_now.stacked.num_slots == 2 * len(cohort)
            for silo, client in batched.clients.items():
                if silo in cohort:
                    assert client.resident and client.cohort is engine_now
                else:
                    assert not client.resident and client.cohort is None and client.optimizers == {}
                    tensors = [t for m in client.models.values() for t in m.state_dict().values()]
                    tensors += [client.train_split.images, client.valid_split.images, client.test_split.images]
                    assert all(t.device.type == "cpu" for t in tensors)
                    stacked = {t.data_ptr() for t in engine_now.stacked.state_dict().values()}
                    assert not stacked & {t.data_ptr() for t in tensors}
        for silo in range(3):
            for name, model in loop.clients[silo].models.items():
                other = batched.clients[silo].models[name].state_dict()
                assert all((v - other[k]).abs().max() <= 1e-6 for k, v in model.state_dict().items()
                           if v.is_floating_point()), (round_idx, silo, name)
    assert batched.coordinator.cohorts == loop.coordinator.cohorts == {0: [1, 2], 1: [0, 2]}


def test_a_sampled_run_resumed_after_a_round_ends_as_the_uninterrupted_one(tmp_path):
    # the cohorts, silo 1's waiting PFA deputy (it sits out round 1) and the clients' in_next_round
    # survive the resume point after round 1
    from fedml_prr.runtime import sp

    fed = tiny_federation()
    full = run(config(tmp_path / "full"), federation=fed, overwrite=True)
    cut = config(tmp_path / "cut")
    original, calls = sp.ResultsStore.save_resume, {"n": 0}

    class Interrupt(Exception):
        pass

    def save_then_stop(self, state):
        original(self, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt()

    sp.ResultsStore.save_resume = save_then_stop
    try:
        with pytest.raises(Interrupt):
            run(cut, federation=fed)
    finally:
        sp.ResultsStore.save_resume = original
    resumed = run(cut, federation=fed, resume=True)
    assert resumed.summary["sampling"] == full.summary["sampling"]
    read = lambda folder: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert read(tmp_path / "cut" / "PRR") == read(tmp_path / "full" / "PRR")
