"""Parties of a gRPC federation: the address book FedML reads, and waiting for the server.

Liveness during a run (heartbeats): :mod:`fedml_prr.fedml_adapter.heartbeat`.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

logger = logging.getLogger(__name__)

#: how long a gRPC party waits for the others to come up
STARTUP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Party:
    rank: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


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


def reachable(party: Party, timeout: float = 1.0) -> bool:
    """Whether ``party``'s gRPC server accepts a connection (gRPC's own connect, as FedML's sends)."""
    import grpc

    channel = grpc.insecure_channel(party.address, options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def wait_until_reachable(party: Party, *, timeout: float, interval: float = 0.2) -> None:
    """Block until ``party``'s gRPC port accepts connections (a TimeoutError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    logged = False
    while not reachable(party):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server at {party.host}:{party.port} did not come up within {timeout:.0f} s; "
                               "start it, or check grpc_ipconfig_path")
        if not logged:
            logger.info("waiting for the server at %s:%d", party.host, party.port)
            logged = True
        time.sleep(interval)
