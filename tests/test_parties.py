"""gRPC address book and heartbeats (fast, FedML's real gRPC endpoint), and runtime selection errors."""

import threading
import time

import pytest

from fedml_prr.api import make_config, run
from fedml_prr.fedml_adapter.heartbeat import HeartbeatMonitor, HeartbeatSender
from fedml_prr.runtime.launch import free_ports
from fedml_prr.runtime.parties import Party, read_grpc_ipconfig, wait_until_reachable, write_grpc_ipconfig


def test_address_book_round_trip_and_stale_header(tmp_path):
    path = tmp_path / "ip.csv"
    write_grpc_ipconfig(str(path), [9000, 9001, 9002])
    parties = read_grpc_ipconfig(str(path))
    assert parties == {r: Party(r, "127.0.0.1", 9000 + r) for r in range(3)}
    stale = tmp_path / "stale.csv"
    stale.write_text("receiver_id,ip\n0,127.0.0.1\n")  # the header of FedML's shipped examples
    with pytest.raises(ValueError, match="eid,rank,grpc_server_ip,grpc_server_port"):
        read_grpc_ipconfig(str(stale))
    with pytest.raises(FileNotFoundError, match="grpc_ipconfig_path"):
        read_grpc_ipconfig(str(tmp_path / "missing.csv"))


def fedml_server_endpoint(tmp_path):
    """FedML's real gRPC comm manager of a server (rank 0) on a free loopback port."""
    from fedml.core.distributed.communication.grpc.grpc_comm_manager import GRPCCommManager

    port = free_ports(1)[0]
    ipconfig = tmp_path / "ipconfig.csv"
    write_grpc_ipconfig(str(ipconfig), [port])
    return GRPCCommManager(str(ipconfig), client_rank=0, client_num=2), f"127.0.0.1:{port}"


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_heartbeats_reach_the_monitor_and_stay_out_of_fedml_queue(tmp_path):
    endpoint, address = fedml_server_endpoint(tmp_path)
    lost, stop = [], threading.Event()
    monitor = HeartbeatMonitor({1: "127.0.0.1:1"}, done=lambda: False, on_lost=lost.append,
                               interval=0.05, timeout=0.5)
    monitor.attach(endpoint)
    monitor.start()
    sender = HeartbeatSender(address, 1, done=stop.is_set, on_lost=lost.append, interval=0.05)
    try:
        sender.start()
        wait_for(lambda: sender.sent >= 5)
        assert lost == [] and monitor.last_seen[1] is not None
        assert endpoint.grpc_servicer.message_q.empty()  # FedML's receive loop never sees them
        endpoint.grpc_servicer.message_q.put(b"a real message")  # everything else still goes through
        assert endpoint.grpc_servicer.message_q.get_nowait() == b"a real message"
        stop.set()  # the client goes silent
        sender.join(timeout=5)
        monitor.join(timeout=5)
        assert len(lost) == 1 and "client rank 1 (silo 0)" in lost[0] and "sent no heartbeat" in lost[0]
    finally:
        stop.set()
        endpoint.stop_receive_message()


def test_monitor_reports_a_client_that_never_comes_up_and_is_silent_after_a_normal_end():
    lost = []
    HeartbeatMonitor({2: "127.0.0.1:1"}, done=lambda: False, on_lost=lost.append, interval=0.02,
                     startup_timeout=0.1).run()
    assert len(lost) == 1 and "client rank 2 (silo 1)" in lost[0] and "did not come up" in lost[0]
    finished = threading.Event()
    monitor = HeartbeatMonitor({1: "127.0.0.1:1"}, done=finished.is_set, on_lost=lost.append, interval=0.02,
                               startup_timeout=0.5)
    monitor.start()
    finished.set()
    monitor.join(timeout=5)
    assert len(lost) == 1 and not monitor.is_alive()


def test_a_client_reports_a_server_that_stops_answering(tmp_path):
    endpoint, address = fedml_server_endpoint(tmp_path)
    lost = []
    sender = HeartbeatSender(address, 1, done=lambda: False, on_lost=lost.append, interval=0.05, misses=3)
    sender.start()
    wait_for(lambda: sender.sent >= 2)
    endpoint.stop_receive_message()  # the server dies
    sender.join(timeout=10)
    assert len(lost) == 1 and "the server at" in lost[0] and "stopped answering" in lost[0]


def test_waiting_for_a_server_that_never_starts_times_out():
    with pytest.raises(TimeoutError, match="did not come up"):
        wait_until_reachable(Party(0, "127.0.0.1", 1), timeout=0.3, interval=0.05)


@pytest.mark.parametrize("backend, hint", [("MPI", "fedml-prr mpirun"), ("GRPC", "--role server"),
                                           ("NCCL", "sp, MPI or GRPC")])
def test_a_distributed_backend_in_one_process_says_how_to_launch_it(backend, hint):
    config = make_config({"comm_args": {"backend": backend}})
    with pytest.raises(ValueError, match=hint):
        run(config)
