"""Launch a whole cross-silo federation on this machine: one server and K client processes over gRPC.

Each party is a separate ``fedml-prr run --role ...`` process, exactly as on K+1 machines; only
the address book (``grpc_ipconfig_path``, free loopback ports) and a throwaway federation CA with
one TLS kit per party (``<results_dir>/tls``, :mod:`fedml_prr.runtime.provision`) are made here.
The launcher waits for the server; once it has exited, the clients get a grace period to finish,
then any left are stopped.  It reports the server's exit status and the party that failed first.
Logs: ``<results_dir>/logs/rank<r>.log``.

Used by ``run_scripts/run_grpc_federation.py`` (:func:`fedml_prr.cli.launchers.grpc_federation_main`)
and the tests.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from .parties import write_grpc_ipconfig
from .provision import provision


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
    """How a local federation ended.

    ``returncode`` is the server's exit status (0: the run finished); ``failed_rank`` the party that
    failed first (by the time it exited), None when none did; ``exit_codes`` every party's status.
    """

    returncode: int
    failed_rank: Optional[int]
    logs: Dict[int, Path]
    wall_time_s: float
    exit_codes: Dict[int, Optional[int]] = field(default_factory=dict)

    def log(self, rank: int) -> str:
        return self.logs[rank].read_text()


def _watch(process: subprocess.Popen, exits: Dict[int, float], rank: int, lock: threading.Lock) -> None:
    process.wait()
    with lock:
        exits[rank] = time.monotonic()


def launch_grpc_federation(config_file: str, *, num_clients: int, results_dir: str,
                           settings: Sequence[str] = (), extra_args: Sequence[str] = (),
                           party_settings: Optional[Mapping[int, Sequence[str]]] = None, insecure: bool = False,
                           timeout: float = 3600.0, grace: float = 15.0,
                           python: str = sys.executable) -> FederationOutcome:
    """Start the server and ``num_clients`` clients, wait for all, return the outcome.

    ``settings`` are ``KEY=VALUE`` overrides for every party (``--set``), ``party_settings`` more of
    them for one rank (e.g. a client's own ``prr_data_root``); ``extra_args`` other ``run`` options
    (``--resume``, ``--overwrite``, ``--algorithm X``).  Unless ``insecure``, a throwaway federation
    CA and one kit per party are provisioned under ``<results_dir>/tls`` and each party gets its own.
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
    common += list(extra_args) + (["--insecure"] if insecure else [])
    kits = {} if insecure else {kit.rank: kit for kit in provision(
        root / "tls", ["server"] + [f"client{r}" for r in range(1, num_clients + 1)], overwrite=True)}
    logs = {rank: root / "logs" / f"rank{rank}.log" for rank in range(num_clients + 1)}
    started = time.monotonic()
    processes: Dict[int, subprocess.Popen] = {}
    exits: Dict[int, float] = {}
    lock = threading.Lock()
    with ExitStack() as stack:
        for rank in range(num_clients + 1):
            command = common + (["--role", "server"] if rank == 0 else ["--role", "client", "--rank", str(rank)])
            if rank in kits:
                command += ["--set", f"prr_tls_cert={kits[rank].cert}", "--set", f"prr_tls_key={kits[rank].key}",
                            "--set", f"prr_tls_ca={kits[rank].ca}"]
            for item in (party_settings or {}).get(rank, ()):
                command += ["--set", item]
            out = stack.enter_context(logs[rank].open("w"))
            processes[rank] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            threading.Thread(target=_watch, args=(processes[rank], exits, rank, lock), daemon=True).start()
        deadline = started + timeout
        while any(p.poll() is None for p in processes.values()):
            if processes[0].poll() is not None:  # the server is done: the clients get a grace period to finish
                deadline = min(deadline, time.monotonic() + grace)
            if time.monotonic() > deadline:
                for p in processes.values():
                    if p.poll() is None:
                        p.kill()
                break
            time.sleep(0.1)
        for p in processes.values():
            p.wait()
    time.sleep(0.05)  # let the watchers record the last exits
    codes = {r: p.returncode for r, p in processes.items()}
    failed = sorted((exits.get(r, float("inf")), r) for r, c in codes.items() if c != 0)
    return FederationOutcome(returncode=codes[0] if codes[0] is not None else 1,
                             failed_rank=failed[0][1] if failed else None, logs=logs,
                             wall_time_s=time.monotonic() - started, exit_codes=codes)
