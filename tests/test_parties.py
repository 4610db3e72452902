"""gRPC address book and liveness watch (fast, real sockets), and runtime selection errors."""

import socket
import threading
import time

import pytest

from fedml_prr.api import make_config, run
from fedml_prr.runtime.parties import Party, PeerWatch, read_grpc_ipconfig, wait_until_reachable, write_grpc_ipconfig


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


class GrpcParty:
    """A real gRPC server on a free loopback port (what a FedML party listens with)."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.party = Party(1, "127.0.0.1", port)

    def close(self) -> None:
        self.server.stop(None).wait()


def listening_socket():
    grpc_party = GrpcParty()
    return grpc_party, grpc_party.party


def test_peer_watch_reports_a_party_that_stops_answering():
    server, party = listening_socket()
    lost = []
    watch = PeerWatch([party], done=lambda: False, on_lost=lost.append, interval=0.05, misses=3)
    watch.start()
    time.sleep(0.3)
    assert lost == []  # alive: nothing reported
    server.close()
    watch.join(timeout=5)
    assert len(lost) == 1 and "client rank 1 (silo 0)" in lost[0] and "stopped answering" in lost[0]


def test_peer_watch_is_silent_after_a_normal_end():
    server, party = listening_socket()
    finished = threading.Event()
    lost = []
    watch = PeerWatch([party], done=finished.is_set, on_lost=lost.append, interval=0.05, misses=2)
    watch.start()
    time.sleep(0.2)
    finished.set()
    server.close()
    watch.join(timeout=5)
    assert lost == [] and not watch.is_alive()


def test_peer_watch_reports_a_party_that_never_comes_up():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        party = Party(0, "127.0.0.1", sock.getsockname()[1])
    lost = []
    PeerWatch([party], done=lambda: False, on_lost=lost.append, interval=0.05, startup_timeout=0.2).run()
    assert len(lost) == 1 and "the server" in lost[0] and "did not come up" in lost[0]


def test_waiting_for_a_server_that_never_starts_times_out():
    with pytest.raises(TimeoutError, match="did not come up"):
        wait_until_reachable(Party(0, "127.0.0.1", 1), timeout=0.3, interval=0.05)


@pytest.mark.parametrize("backend, hint", [("MPI", "fedml-prr mpirun"), ("GRPC", "--role server"),
                                           ("NCCL", "sp, MPI or GRPC")])
def test_a_distributed_backend_in_one_process_says_how_to_launch_it(backend, hint):
    config = make_config({"comm_args": {"backend": backend}})
    with pytest.raises(ValueError, match=hint):
        run(config)
