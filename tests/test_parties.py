"""The gRPC address book, heartbeats on a real TLS link, and runtime selection errors (fast)."""

import time

import pytest

from fedml_prr.algorithms import get_algorithm
from fedml_prr.api import make_config, run
from fedml_prr.fedml_adapter.grpc_link import GrpcLink, PartyUnreachable, TlsFiles
from fedml_prr.fedml_adapter.managers import ClientManager, Policy
from fedml_prr.fedml_adapter.wire import HEARTBEAT, SERVER_RECEIVES, UPLOAD, make, schemas
from fedml_prr.runtime.launch import free_ports
from fedml_prr.runtime.parties import Party, read_grpc_ipconfig, write_grpc_ipconfig
from fedml_prr.runtime.provision import provision


def test_address_book_round_trip_and_bad_books(tmp_path):
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
    twice = tmp_path / "twice.csv"
    twice.write_text("eid,rank,grpc_server_ip,grpc_server_port\n0,0,127.0.0.1,9000\n1,1,127.0.0.1,9001\n"
                     "1,1,127.0.0.1,9002\n")
    with pytest.raises(ValueError, match="line 4: rank 1 is listed twice"):
        read_grpc_ipconfig(str(twice))
    no_server = tmp_path / "noserver.csv"
    no_server.write_text("eid,rank,grpc_server_ip,grpc_server_port\n1,1,127.0.0.1,9001\n")
    with pytest.raises(ValueError, match="no line for rank 0"):
        read_grpc_ipconfig(str(no_server))


@pytest.fixture
def kits(tmp_path):
    return {kit.rank: kit for kit in provision(tmp_path / "tls", ["server", "A"])}


def link(rank, ports, kits, **kwargs):
    spec = get_algorithm("FedAvg")
    accepted = {k: v for k, v in schemas(spec.client, spec.server).items() if k in SERVER_RECEIVES}
    tls = TlsFiles(kits[rank].cert, kits[rank].key, kits[rank].ca)
    return GrpcLink(rank, {r: f"127.0.0.1:{p}" for r, p in enumerate(ports)}, accepted=accepted, tls=tls, **kwargs)


def test_heartbeats_reach_the_watcher_and_never_the_inbox(kits):
    ports = free_ports(2)
    beats = []
    server = link(0, ports, kits, on_heartbeat=beats.append)
    client = link(1, ports, kits)
    try:
        for _ in range(3):
            client.send_message(make(HEARTBEAT, 1, 0))
        assert beats == [1, 1, 1] and server.receive(timeout=0.2) is None
        client.send_message(make(UPLOAD, 1, 0, {"silo": 0, "step": 1, "num_samples": 4}))
        message = server.receive(timeout=5)  # real messages still come through
        assert message.get_type() == UPLOAD and message.get("payload")["num_samples"] == 4
    finally:
        client.stop_receive_message()
        server.stop_receive_message()


def test_a_client_reports_a_server_that_stops_answering(kits):
    ports = free_ports(2)
    server = link(0, ports, kits)
    client = link(1, ports, kits, send_timeout=2.0)
    lost = []
    manager = ClientManager(client, trainer=None, rank=1, policy=Policy(heartbeat_interval=0.05, heartbeat_misses=3),
                            on_lost=lost.append)
    try:
        client.send_message(make(HEARTBEAT, 1, 0))  # the server answers
        server.stop_receive_message()
        with pytest.raises(PartyUnreachable, match="the server at 127.0.0.1"):
            client.send_message(make(HEARTBEAT, 1, 0), timeout=1.0)
        manager._beat()  # returns once the server is reported lost
        assert len(lost) == 1 and "the server stopped answering (3 heartbeats in a row failed" in lost[0]
        assert "--resume" in lost[0]
    finally:
        client.stop_receive_message()


def test_a_client_waiting_for_a_server_that_never_starts_times_out(kits):
    ports = free_ports(2)
    client = link(1, ports, kits)
    manager = ClientManager(client, trainer=None, rank=1, policy=Policy(startup_timeout=0.5), on_lost=print)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="the server did not answer within 0 s"):
            manager._send_hello(make("hello", 1, 0, {"rank": 1}))
        assert time.monotonic() - started < 10
    finally:
        client.stop_receive_message()


@pytest.mark.parametrize("backend, hint", [("MPI", "fedml-prr mpirun"), ("GRPC", "--role server"),
                                           ("NCCL", "sp, MPI or GRPC")])
def test_a_distributed_backend_in_one_process_says_how_to_launch_it(backend, hint):
    config = make_config({"comm_args": {"backend": backend}})
    with pytest.raises(ValueError, match=hint):
        run(config)


def test_a_server_whose_message_cannot_reach_a_client_names_that_client(tmp_path, kits):
    from fedml_prr.fedml_adapter.managers import ServerManager
    from fedml_prr.fedml_adapter.trainers import AlgorithmServerAggregator
    from fedml_prr.runtime.sp import build_local_federation

    from fedtiny import TINY, tiny_federation

    doc = {k: dict(v) for k, v in TINY.items()}
    doc["prr_args"]["prr_results_dir"] = str(tmp_path / "run")
    parties = build_local_federation(make_config(doc, algorithm="FedAvg"), tiny_federation())
    aggregator = AlgorithmServerAggregator(None, None, coordinator=parties.coordinator)
    ports = free_ports(2)  # rank 1's port: nobody listens there (the client was killed)
    server = link(0, ports, kits, send_timeout=2.0)
    for fail_fast in (True, False):
        lost = []
        manager = ServerManager(server, aggregator, num_clients=1,
                                policy=Policy(dropout="fail" if fail_fast else "tolerate", heartbeat_timeout=None),
                                on_lost=lost.append)
        manager.joined = {1}
        parties.coordinator.min_clients = 1
        try:
            manager._step()
        except RuntimeError:
            pass
        if fail_fast:
            assert len(lost) == 1 and lost[0].startswith("client rank 1 (silo 0) could not be reached")
            assert "--resume" in lost[0] and "prr_dropout: fail" in lost[0]
        else:
            assert lost and "fewer than prr_min_clients" in lost[-1]  # no silo left to aggregate
            assert 1 in manager.lost
    server.stop_receive_message()
