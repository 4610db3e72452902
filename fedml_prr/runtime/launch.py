"""Launch a whole cross-silo federation on this machine: one server and K client processes over gRPC.

Each party is a separate ``fedml-prr run --role ...`` process, exactly as on K+1 machines; only
the address book (``grpc_ipconfig_path``) is written here, with free loopback ports.  The launcher
waits for every party, and if one fails it gives the others a few seconds to notice and exit on
their own (they do: :mod:`fedml_prr.fedml_adapter.heartbeat`), then stops any left, and
returns the failing party's exit status.  Logs: ``<results_dir>/logs/rank<r>.log``.

Used by ``run_scripts/run_grpc_federation.py`` (:func:`fedml_prr.cli.launchers.grpc_federation_main`)
and the tests.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .parties import write_grpc_ipconfig


#: ports handed to a local federation: below Linux's ephemeral range (32768-60999), so that no
#: outgoing connection of this machine can take one between choosing it and the party binding it
PORT_RANGE = (20000, 32000)


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """``count`` distinct TCP ports of :data:`PORT_RANGE` that were free a moment ago."""
    start = random.randrange(*PORT_RANGE)
    ports: List[int] = []
    for offset in range(PORT_RANGE[1] - PORT_RANGE[0]):
        port = PORT_RANGE[0] + (start - PORT_RANGE[0] + offset) % (PORT_RANGE[1] - PORT_RANGE[0])
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"fewer than {count} free ports in {PORT_RANGE}")


@dataclass
class FederationOutcome:
    returncode: int
    failed_rank: Optional[int]
    logs: Dict[int, Path]
    wall_time_s: float

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text()


def launch_grpc_federation(config_file: str, *, num_clients: int, results_dir: str,
                           settings: Sequence[str] = (), extra_args: Sequence[str] = (),
                           timeout: float = 3600.0, grace: float = 15.0,
                           python: str = sys.executable) -> FederationOutcome:
    """Start the server and ``num_clients`` clients, wait for all, return the outcome.

    ``settings`` are ``KEY=VALUE`` overrides for every party (``--set``); ``extra_args`` other
    ``run`` options (``--resume``, ``--overwrite``, ``--algorithm X``).
    """
    root = Path(results_dir)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    ipconfig = root / "grpc_ipconfig.csv"
    write_grpc_ipconfig(str(ipconfig), free_ports(num_clients + 1))
    common = [python, "-m", "fedml_prr", "run", "--cf", config_file, "--no-progress",
              "--set", "backend=GRPC", "--set", f"grpc_ipconfig_path={ipconfig}",
              "--set", f"prr_results_dir={root}", "--set", f"client_num_in_total={num_clients}",
              "--set", f"client_num_per_round={num_clients}"]
    for item in settings:
        common += ["--set", item]
    common += list(extra_args)
    logs = {rank: root / "logs" / f"rank{rank}.log" for rank in range(num_clients + 1)}
    started = time.monotonic()
    processes: Dict[int, subprocess.Popen] = {}
    with ExitStack() as stack:
        for rank in range(num_clients + 1):
            role = ["--role", "server"] if rank == 0 else ["--role", "client", "--rank", str(rank)]
            out = stack.enter_context(logs[rank].open("w"))
            processes[rank] = subprocess.Popen(common + role, stdout=out, stderr=subprocess.STDOUT)
        failed: Optional[int] = None
        deadline = started + timeout
        while any(p.poll() is None for p in processes.values()):
            bad = [r for r, p in processes.items() if p.poll() not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                deadline = min(deadline, time.monotonic() + grace)
            if time.monotonic() > deadline:
                for p in processes.values():
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(0.2)
        for p in processes.values():
            p.wait()
    codes = {r: p.returncode for r, p in processes.items()}
    if failed is None:
        failed = next((r for r, c in codes.items() if c != 0), None)
    return FederationOutcome(returncode=0 if failed is None else (codes[failed] or 1), failed_rank=failed,
                             logs=logs, wall_time_s=time.monotonic() - started)
