"""FedRoD, FedALA, SCAFFOLD and FedAvg-FT under real MPI and gRPC processes end with the same
metrics and checkpoints as one process (tolerance: none), as PRR and FedAvg do in
test_distributed.py.  1 server + 2 clients, 2 rounds x 2 epochs on the 2-client image folder."""

import pytest

from fedml_prr.runtime.launch import launch_grpc_federation

from test_distributed import (HARD_TIMEOUT, assert_same_checkpoints, cli, data_root, records,  # noqa: F401
                              single_process, write_config)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["FedRoD", "FedALA", "SCAFFOLD", "FedAvg-FT"])
def test_new_baselines_run_identically_in_one_process_under_mpi_and_over_grpc(tmp_path, data_root, algorithm):
    config_file = write_config(tmp_path, data_root, algorithm=algorithm)
    single_process(config_file, tmp_path / "sp")
    reference = records(tmp_path / "sp")
    assert len(reference) == 2 * 2  # rounds x clients
    mpi = cli("mpirun", "-np", "3", "--cf", str(config_file), "--set", f"prr_results_dir={tmp_path / 'mpi'}")
    assert mpi.returncode == 0, mpi.stdout + mpi.stderr
    grpc = launch_grpc_federation(str(config_file), num_clients=2, results_dir=str(tmp_path / "grpc"),
                                  timeout=HARD_TIMEOUT)
    assert grpc.returncode == 0, grpc.log(0) + grpc.log(1) + grpc.log(2)
    for backend in ("mpi", "grpc"):
        assert records(tmp_path / backend) == reference, backend
        assert_same_checkpoints(tmp_path / "sp", tmp_path / backend)
