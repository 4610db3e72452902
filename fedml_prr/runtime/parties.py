"""Parties of a gRPC federation: the address book (``grpc_ipconfig_path``).

A CSV ``eid,rank,grpc_server_ip,grpc_server_port`` with one line per party (rank 0 = server,
rank ``k`` = the client of silo ``k - 1``); each party listens on its own line's address and
calls the others at theirs.  Liveness during a run: :mod:`fedml_prr.fedml_adapter.managers`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence

logger = logging.getLogger(__name__)

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
        for line, row in enumerate(reader, start=2):
            try:
                party = Party(int(row["rank"]), row["grpc_server_ip"].strip(), int(row["grpc_server_port"]))
                eid = int(row["eid"])
            except (TypeError, ValueError):
                raise ValueError(f"{path} line {line}: rank, eid and grpc_server_port must be integers, got {dict(row)}") from None
            if eid in parties:
                raise ValueError(f"{path} line {line}: rank {eid} is listed twice")
            parties[eid] = party
    if 0 not in parties:
        raise ValueError(f"{path} has no line for rank 0 (the server)")
    return parties


def write_grpc_ipconfig(path: str, ports: Sequence[int], host: str = "127.0.0.1") -> None:
    """Address book for a federation on one host: party ``i`` listens on ``ports[i]``."""
    lines = ["eid,rank,grpc_server_ip,grpc_server_port"]
    lines += [f"{i},{i},{host},{port}" for i, port in enumerate(ports)]
    Path(path).write_text("\n".join(lines) + "\n")
