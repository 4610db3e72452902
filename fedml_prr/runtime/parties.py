"""Parties of a gRPC federation: the address book FedML reads, and liveness checks.

gRPC gives FedML no failure detector: a party whose peer died waits forever.  Every party here
knows the others' addresses from ``grpc_ipconfig_path``; :class:`PeerWatch` probes the ports of
the parties this one waits for and ends the process with an error naming the lost one.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Sequence

logger = logging.getLogger(__name__)

#: how long a gRPC party waits for the others to come up
STARTUP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Party:
    rank: int
    host: str
    port: int


def read_grpc_ipconfig(path: str) -> Dict[int, Party]:
    """Parse FedML's gRPC address book (CSV ``eid,rank,grpc_server_ip,grpc_server_port``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"grpc_ipconfig_path {path} does not exist; write a CSV with the header "
                                "eid,rank,grpc_server_ip,grpc_server_port and one line per party (rank 0 = server)")
    with file.open(newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"eid", "rank", "grpc_server_ip", "grpc_server_port"}
        if not needed <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: the header must be eid,rank,grpc_server_ip,grpc_server_port "
                             f"(FedML's examples ship a stale one), got {reader.fieldnames}")
        parties = {}
        for row in reader:
            parties[int(row["eid"])] = Party(int(row["rank"]), row["grpc_server_ip"], int(row["grpc_server_port"]))
    return parties


def write_grpc_ipconfig(path: str, ports: Sequence[int], host: str = "127.0.0.1") -> None:
    """Address book for a federation on one host: party ``i`` listens on ``ports[i]``."""
    lines = ["eid,rank,grpc_server_ip,grpc_server_port"]
    lines += [f"{i},{i},{host},{port}" for i, port in enumerate(ports)]
    Path(path).write_text("\n".join(lines) + "\n")


class PeerWatch(threading.Thread):
    """Ends this process when a party it waits for disappears (gRPC has no failure detector).

    Every ``interval`` seconds it connects to each watched party's gRPC server.  A
    party that was reachable and then refuses ``misses`` checks in a row is gone; one never
    reachable within ``startup_timeout`` seconds never came up.  ``on_lost(message)`` is then
    called (the runtime logs and exits non-zero).  ``done()`` True stops the watch (a normal end:
    the other parties exit on their own).
    """

    def __init__(self, parties: Sequence[Party], *, done: Callable[[], bool], on_lost: Callable[[str], None],
                 interval: float = 1.0, misses: int = 3, startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
        super().__init__(name="fedml-prr-peer-watch", daemon=True)
        self.parties = list(parties)
        self.done = done
        self.on_lost = on_lost
        self.interval = interval
        self.misses = misses
        self.startup_timeout = startup_timeout

    @staticmethod
    def reachable(party: Party, timeout: float = 1.0) -> bool:
        """Whether ``party``'s gRPC server accepts a connection (gRPC's own connect, as FedML's sends)."""
        import grpc

        channel = grpc.insecure_channel(f"{party.host}:{party.port}", options=[("grpc.enable_http_proxy", 0)])
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False
        finally:
            channel.close()

    def run(self) -> None:
        seen = {p.rank: False for p in self.parties}
        missed = {p.rank: 0 for p in self.parties}
        started = time.monotonic()
        while not self.done():
            for party in self.parties:
                if self.reachable(party):
                    seen[party.rank], missed[party.rank] = True, 0
                    continue
                missed[party.rank] += 1
                role = "the server" if party.rank == 0 else f"client rank {party.rank} (silo {party.rank - 1})"
                if seen[party.rank] and missed[party.rank] >= self.misses and not self.done():
                    self.on_lost(f"{role} at {party.host}:{party.port} stopped answering; it probably failed "
                                 "(see its log). Restart the federation with --resume to continue from the last "
                                 "completed round")
                    return
                if not seen[party.rank] and time.monotonic() - started > self.startup_timeout and not self.done():
                    self.on_lost(f"{role} at {party.host}:{party.port} did not come up within "
                                 f"{self.startup_timeout:.0f} s; start it, or check grpc_ipconfig_path")
                    return
            time.sleep(self.interval)


def wait_until_reachable(party: Party, *, timeout: float, interval: float = 0.2) -> None:
    """Block until ``party``'s gRPC port accepts connections (a TimeoutError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    logged = False
    while not PeerWatch.reachable(party):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server at {party.host}:{party.port} did not come up within {timeout:.0f} s; "
                               "start it, or check grpc_ipconfig_path")
        if not logged:
            logger.info("waiting for the server at %s:%d", party.host, party.port)
            logged = True
        time.sleep(interval)
