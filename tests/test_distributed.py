"""Distributed runtimes with real processes: mpirun (MPI) and a gRPC federation on loopback ports.

Every run here is 1 server + 2 clients on a 2-client image folder.  For the same config and seed
the single-process, MPI and gRPC runs must end with *identical* per-client metrics and
checkpoints (tolerance: none - the same tensors travel pickled, every party uses one thread).
Each subprocess has a hard timeout, so a hang fails the test instead of blocking CI.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fedml_prr.api import make_config, run
from fedml_prr.data.federation import Federation
from fedml_prr.runtime.launch import free_ports, launch_grpc_federation
from fedml_prr.runtime.parties import write_grpc_ipconfig
from fedml_prr.runtime.provision import provision

from fedtiny import tiny_federation, write_image_folder

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
MPIRUN = Path(sys.executable).parent / "mpirun"
HARD_TIMEOUT = 300  # seconds: a hang fails the test


def subprocess_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONUNBUFFERED="1")
    env["PATH"] = f"{MPIRUN.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    tiny = tiny_federation()
    two = Federation("tiny2", tiny.class_names, tiny.clients[:2])
    return write_image_folder(tmp_path_factory.mktemp("data"), two)


def write_config(folder: Path, data_root: Path, *, algorithm="PRR", rounds=2, epochs=2, per_round=None) -> Path:
    doc = {
        "common_args": {"training_type": "simulation", "random_seed": 0},
        "data_args": {"dataset": "image_folder"},
        "model_args": {"model": "vgg16_slim"},
        "train_args": {"federated_optimizer": algorithm, "comm_round": rounds, "epochs": epochs, "batch_size": 8,
                       "learning_rate": 0.05, **({"client_num_in_total": 2, "client_num_per_round": per_round}
                                                 if per_round else {})},
        "comm_args": {"backend": "sp"},
        "prr_args": {"prr_data_root": str(data_root), "prr_image_size": 32, "prr_model_options": {"width": 0.25},
                     "prr_cpa_init_rounds": 1, "prr_eval_batch_size": 64, "prr_threads": 1,
                     "prr_results_dir": str(folder / "sp")},
    }
    path = folder / f"{algorithm}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def records(results_dir: Path):
    return [json.loads(line) for line in (results_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_checkpoints(a: Path, b: Path, clients=("A", "B")):
    for kind in ("best", "last"):
        for client in clients:
            sa = torch.load(a / "checkpoints" / kind / f"{client}.pt")
            sb = torch.load(b / "checkpoints" / kind / f"{client}.pt")
            assert sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), (kind, client)


def cli(*args, timeout=HARD_TIMEOUT, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedml_prr", *args], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(), cwd=cwd)


def single_process(config_file: Path, results_dir: Path):
    config = make_config(config_file, overrides={"prr_results_dir": str(results_dir)})
    return run(config, overwrite=True)


@pytest.fixture(scope="module")
def prr_reference(tmp_path_factory, data_root):
    folder = tmp_path_factory.mktemp("prr")
    # one client per round (FedML's draw: silo 1 trains round 0, silo 0 round 1): the same cohorts,
    # absent clients and end-of-run evaluation in every runtime
    config_file = write_config(folder, data_root, per_round=1)
    single_process(config_file, folder / "sp")
    return config_file, folder


def test_mpi_and_grpc_end_with_the_same_metrics_and_checkpoints_as_one_process(prr_reference):
    config_file, folder = prr_reference
    mpi = cli("mpirun", "-np", "3", "--cf", str(config_file), "--set", f"prr_results_dir={folder / 'mpi'}")
    assert mpi.returncode == 0, mpi.stdout + mpi.stderr
    assert "PRR on image_folder" in mpi.stdout and mpi.stdout.count("finished") == 2
    grpc = launch_grpc_federation(str(config_file), num_clients=2, results_dir=str(folder / "grpc"),
                                  settings=["client_num_per_round=1"], timeout=HARD_TIMEOUT)
    assert grpc.returncode == 0, grpc.log(0) + grpc.log(1) + grpc.log(2)
    reference = records(folder / "sp")
    # round 0: silo 1 only (it records at once: it is not in round 1); round 1: silo 0, and silo 1
    # evaluated at the final delivery without training
    assert [(r["round"], r["silo"], r.get("received", True), r.get("took_part", True)) for r in reference] == \
        [(0, 1, False, True), (1, 0, True, True), (1, 1, True, False)]
    cohorts = json.loads((folder / "sp" / "summary.json").read_text())["sampling"]["cohorts"]
    assert cohorts == [[1], [0]]
    for backend in ("mpi", "grpc"):
        assert records(folder / backend) == reference, backend
        summary = json.loads((folder / backend / "summary.json").read_text())
        assert summary["backend"] == backend.upper()
        assert summary["sampling"]["cohorts"] == cohorts, backend
        assert_same_checkpoints(folder / "sp", folder / backend)


@pytest.mark.slow  # one more MPI job (60-130 s): the default suite keeps PRR's MPI/gRPC equality
def test_mpi_runs_a_baseline_identically(tmp_path, data_root):
    config_file = write_config(tmp_path, data_root, algorithm="FedAvg")
    single_process(config_file, tmp_path / "sp")
    mpi = cli("mpirun", "-np", "3", "--cf", str(config_file), "--set", f"prr_results_dir={tmp_path / 'mpi'}")
    assert mpi.returncode == 0, mpi.stdout + mpi.stderr
    assert records(tmp_path / "mpi") == records(tmp_path / "sp")


@pytest.mark.slow  # one more MPI job (60-130 s): the default suite keeps PRR's MPI/gRPC equality
def test_mpi_runs_prr_segmentation_identically(tmp_path):
    """The prostate path (masks, Dice selection, pixel CPA) under mpirun matches one process."""
    doc = {
        "common_args": {"training_type": "simulation", "random_seed": 0},
        "data_args": {"dataset": "prostate_synthetic"},
        "model_args": {"model": "unet_small"},
        "train_args": {"federated_optimizer": "PRR", "comm_round": 2, "epochs": 2, "batch_size": 4,
                       "learning_rate": 0.1},
        "prr_args": {"prr_image_size": 32, "prr_dataset_options": {"cases": [2, 1, 1], "slices_per_case": 4,
                                                                   "sites": 2},
                     "prr_model_options": {"base": 8, "depth": 2}, "prr_threads": 1,
                     "prr_results_dir": str(tmp_path / "sp")},
    }
    config_file = tmp_path / "prostate.yaml"
    config_file.write_text(yaml.safe_dump(doc))
    single_process(config_file, tmp_path / "sp")
    mpi = cli("mpirun", "-np", "3", "--cf", str(config_file), "--set", f"prr_results_dir={tmp_path / 'mpi'}")
    assert mpi.returncode == 0, mpi.stdout + mpi.stderr
    reference = records(tmp_path / "sp")
    assert len(reference) == 2 * 2 and "dice" in reference[0]["test"]
    assert records(tmp_path / "mpi") == reference
    summary = json.loads((tmp_path / "mpi" / "summary.json").read_text())
    assert summary["selection_metric"] == "dice" and summary["task"] == "segmentation"
    assert_same_checkpoints(tmp_path / "sp", tmp_path / "mpi")


def test_unmodified_fedml_script_runs_prr_after_install(prr_reference):
    config_file, folder = prr_reference
    out = folder / "fedml_script"
    doc = yaml.safe_load(config_file.read_text())
    doc["prr_args"]["prr_results_dir"] = str(out)
    script_config = folder / "fedml_script.yaml"
    script_config.write_text(yaml.safe_dump(doc))
    result = cli("exec", str(ROOT / "run_scripts" / "fedml_main.py"), "--cf", str(script_config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert records(out) == records(folder / "sp")


def mpirun_faulty(mode: str, config_file: Path, results_dir: Path):
    command = [str(MPIRUN), "-np", "3", "--oversubscribe", sys.executable, str(TESTS / "faulty_run.py"), mode, "--cf", str(config_file),
               "--set", f"prr_results_dir={results_dir}", "--algorithm", "Faulty"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=HARD_TIMEOUT, env=subprocess_env())
    return result, time.monotonic() - started


def test_a_rank_that_raises_ends_the_mpi_job_with_its_error(tmp_path, data_root):
    config_file = write_config(tmp_path, data_root, algorithm="FedAvg")
    result, _ = mpirun_faulty("raise", config_file, tmp_path / "run")
    assert result.returncode != 0
    assert "client rank 2 failed: RuntimeError: deliberate failure in silo 1" in result.stderr


def test_a_corrupt_update_is_rejected_by_the_mpi_server_naming_the_silo(tmp_path, data_root):
    config_file = write_config(tmp_path, data_root, algorithm="FedAvg")
    result, _ = mpirun_faulty("nan", config_file, tmp_path / "run")
    assert result.returncode != 0
    assert "server failed: UpdateError: rejected the update of silo 1 at step 2" in result.stderr
    assert "non-finite" in result.stderr
    # the server's state after round 0 is on disk: --resume can continue from it
    saved = torch.load(tmp_path / "run" / "resume.pt", weights_only=False)
    assert saved["step"] == 2


def start_party(config_file: Path, ipconfig: Path, results_dir: Path, rank: int, log: Path, *extra):
    role = ["--role", "server"] if rank == 0 else ["--role", "client", "--rank", str(rank)]
    command = [sys.executable, "-m", "fedml_prr", "-v", "run", "--cf", str(config_file), "--no-progress",
               "--set", "backend=GRPC", "--set", f"grpc_ipconfig_path={ipconfig}",
               "--set", f"prr_results_dir={results_dir}", *role, *extra]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=subprocess_env())


def kit_settings(kits, rank):
    kit = kits[rank]
    return ["--set", f"prr_tls_cert={kit.cert}", "--set", f"prr_tls_key={kit.key}", "--set", f"prr_tls_ca={kit.ca}"]


def wait_for_file(path: Path, processes, logs, what: str):
    deadline = time.monotonic() + HARD_TIMEOUT
    while not path.exists():
        for rank, p in processes.items():
            assert p.poll() is None, logs[rank].read_text()
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def wait_for_log(log: Path, text: str, process, count: int = 1):
    deadline = time.monotonic() + HARD_TIMEOUT
    while log.read_text().count(text) < count:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}:\n{log.read_text()}"
        time.sleep(0.05)


def test_grpc_killed_client_with_fail_fast_stops_the_federation_and_resume_finishes_it(tmp_path, data_root):
    config_file = write_config(tmp_path, data_root, rounds=3)
    single_process(config_file, tmp_path / "sp")
    results_dir = tmp_path / "grpc"
    ipconfig = tmp_path / "ipconfig.csv"
    write_grpc_ipconfig(str(ipconfig), free_ports(3))
    kits = {k.rank: k for k in provision(tmp_path / "tls", ["server", "A", "B"])}
    logs = {r: tmp_path / f"rank{r}.log" for r in range(3)}
    fail_fast = ["--set", "prr_dropout=fail", "--set", "prr_heartbeat_timeout_s=5"]
    parties = {r: start_party(config_file, ipconfig, results_dir, r, logs[r], *fail_fast, *kit_settings(kits, r))
               for r in range(3)}
    try:
        # client rank 2 completed round 0
        wait_for_file(results_dir / "checkpoints" / "last" / "B.pt", parties, logs, "round 0")
        parties[2].send_signal(signal.SIGKILL)
        for rank in (0, 1):
            parties[rank].wait(timeout=120)  # the others notice and exit instead of waiting forever
    finally:
        for p in parties.values():
            if p.poll() is None:
                p.kill()
    server_log, client_log = logs[0].read_text(), logs[1].read_text()
    assert parties[0].returncode != 0 and parties[1].returncode != 0, server_log + client_log
    assert "client rank 2 (silo 1)" in server_log and "prr_dropout: fail" in server_log, server_log
    assert "the server" in client_log and "stopped answering" in client_log, client_log

    logs = {r: tmp_path / f"rank{r}.resume.log" for r in range(3)}
    parties = {r: start_party(config_file, ipconfig, results_dir, r, logs[r], "--resume", *fail_fast,
                              *kit_settings(kits, r)) for r in range(3)}
    for rank, p in parties.items():
        assert p.wait(timeout=HARD_TIMEOUT) == 0, logs[rank].read_text()
    assert records(results_dir) == records(tmp_path / "sp")


@pytest.mark.slow
def test_grpc_federation_goes_on_without_a_killed_client_which_rejoins_with_resume(tmp_path):
    rounds = 50
    doc = {"data_args": {"dataset": "derm_synthetic"}, "model_args": {"model": "vgg16_slim"},
           "train_args": {"federated_optimizer": "FedAvg", "comm_round": rounds, "epochs": 1, "batch_size": 16,
                          "learning_rate": 0.05},
           "prr_args": {"prr_image_size": 32, "prr_dataset_options": {"scale": 0.05},
                        "prr_model_options": {"width": 0.25}, "prr_threads": 1, "prr_heartbeat_timeout_s": 3,
                        "prr_startup_timeout_s": 60, "prr_results_dir": str(tmp_path / "sp")}}
    config_file = tmp_path / "fedavg.yaml"
    config_file.write_text(yaml.safe_dump(doc))
    results_dir = tmp_path / "grpc"
    ipconfig = tmp_path / "ipconfig.csv"
    write_grpc_ipconfig(str(ipconfig), free_ports(5))
    kits = {k.rank: k for k in provision(tmp_path / "tls", ["server", "A", "B", "C", "D"])}
    logs = {r: tmp_path / f"rank{r}.log" for r in range(5)}
    parties = {r: start_party(config_file, ipconfig, results_dir, r, logs[r], *kit_settings(kits, r)) for r in range(5)}
    restarted = None
    try:
        wait_for_file(results_dir / "checkpoints" / "last" / "B.pt", parties, logs, "round 0")
        parties[2].send_signal(signal.SIGKILL)
        wait_for_log(logs[0], "goes on without it", parties[0])
        restart_log = tmp_path / "rank2.restart.log"
        restarted = start_party(config_file, ipconfig, results_dir, 2, restart_log, "--resume", *kit_settings(kits, 2))
        for rank in (0, 1, 3, 4):
            assert parties[rank].wait(timeout=HARD_TIMEOUT) == 0, logs[rank].read_text()
        assert restarted.wait(timeout=HARD_TIMEOUT) == 0, restart_log.read_text()
    finally:
        for p in [*parties.values(), restarted]:
            if p is not None and p.poll() is None:
                p.kill()
    server_log = logs[0].read_text()
    assert "client rank 2 (silo 1) sent no heartbeat for 3 s" in server_log, server_log
    assert server_log.count("client rank 2 (silo 1) joined") == 2, server_log
    by_client = {}
    for record in records(results_dir):
        by_client.setdefault(record["client"], []).append(record)
    for name in "ACD":  # the others took part in every round
        assert [r["round"] for r in by_client[name]] == list(range(rounds))
    # B missed rounds (its record of the round it evaluated just before it was killed travels with an
    # upload it never sent), then came back and took part to the end
    rounds_b = [r["round"] for r in by_client["B"]]
    gap = sorted(set(range(rounds)) - set(rounds_b))
    assert gap and rounds_b[-1] == rounds - 1, rounds_b
    back = next(r for r in by_client["B"] if r["round"] > gap[0])  # its first round after coming back
    assert [r for r in rounds_b if r >= back["round"]] == list(range(back["round"], rounds)), rounds_b
    # it names the rounds it has no evaluation of: at least the gap, contiguous up to its return
    assert set(g for g in gap if g < back["round"]) <= set(back["missed_rounds"])
    assert back["missed_rounds"] == list(range(back["missed_rounds"][0], back["round"]))


@pytest.mark.slow  # one more MPI job (60-130 s): the default suite keeps PRR's MPI/gRPC equality
def test_fedml_own_mpi_fedavg_and_fedprox_run_side_by_side_with_a_proximal_term(tmp_path, data_root):
    config_file = write_config(tmp_path, data_root, algorithm="FedAvg")
    # what FedML's trainer does: no augmentation, no weight decay with SGD, a constant learning rate
    fedml_ready = ["--set", "prr_augment=false", "--set", "weight_decay=0", "--set", "prr_lr_decay_every=100"]
    runs = {}
    for name, extra in (("FedML:FedAvg", []), ("FedML:FedProx", ["--set", "fedprox_mu=1.0"])):
        out = tmp_path / name.replace(":", "_")
        result = cli("mpirun", "-np", "3", "--cf", str(config_file), "--algorithm", name,
                     "--set", f"prr_results_dir={out}", *fedml_ready, *extra)
        assert result.returncode == 0, result.stdout + result.stderr  # FedML's MPI FedProx crash is avoided
        assert f"{name} on image_folder" in result.stdout
        runs[name] = records(out)
        assert [(r["round"], r["client"]) for r in runs[name]] == [(0, "A"), (0, "B"), (1, "A"), (1, "B")]
    # same batches, same initial weights: only FedProx's proximal term can make them differ
    assert [r["test"] for r in runs["FedML:FedAvg"]] != [r["test"] for r in runs["FedML:FedProx"]]
