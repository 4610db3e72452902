"""Distributed runtimes: MPI simulation (``mpirun``) and cross-silo over gRPC, one party per process.

Rank 0 is the server, rank ``k`` (1..K) trains silo ``k - 1``.  The same protocol objects as in
one process (each silo's client; the server's :class:`~fedml_prr.training.coordinator.Coordinator`)
travel between the parties in FedML ``Message`` objects (:mod:`fedml_prr.fedml_adapter.managers`):
under MPI over FedML's MPI transport, over gRPC through
:class:`~fedml_prr.fedml_adapter.grpc_link.GrpcLink` (mutual TLS, typed codec, identities checked).
For the same config and seed a distributed run ends with the same per-client metrics as
``backend: sp`` (tests/test_distributed.py).

Each party holds only what is its own: the server holds no data (it needs the model, the task,
the class names and the silo names - :class:`~fedml_prr.data.federation.FederationInfo` - and
learns the class counts in the handshake); a client holds only its silo's data.

Where things are written (``prr_results_dir``; every party uses its own copy of the path):

- server: ``config.resolved.json``, ``metrics.jsonl``, ``summary.json`` and ``resume.pt`` (its
  state at the last completed round), as a single-process run;
- client of silo ``<name>``: ``checkpoints/{last,best}/<name>.pt`` (its reported model; PRR's
  personalized model never leaves the silo) and ``silos/<name>/resume.pt`` plus the previous one
  (``resume.prev.pt``): it resumes at the newest of them not after the server's step.

A lost party: under MPI the failing rank calls ``MPI_Abort`` (the runtime's launcher); over gRPC
the server goes on without a lost client (``prr_dropout: tolerate``) or stops naming it
(``prr_dropout: fail``), and a client whose server stops answering exits naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..algorithms import get_algorithm
from ..config import RunConfig
from ..data.federation import ClientData, Federation, FederationInfo
from ..fedml_adapter.grpc_link import GrpcLink, TlsFiles
from ..fedml_adapter.managers import ClientManager, MpiLink, Policy, ServerManager
from ..fedml_adapter.trainers import AlgorithmClientTrainer, AlgorithmServerAggregator, SiloHooks
from ..fedml_adapter.wire import CLIENT_RECEIVES, SERVER_RECEIVES, schemas
from ..files import atomic_torch_save
from ..training.coordinator import Coordinator
from ..training.federated import FederatedClient, round_closed_by, steps_per_round, total_steps
from ..training.results import ResultsStore, load_state_file, open_results, run_fields, save_checkpoint
from ..training.setup import build_server, check_federation, client_context
from ..training.tasks import task_named
from .parties import read_grpc_ipconfig
from .sp import RunResult

logger = logging.getLogger(__name__)

BACKENDS = ("MPI", "GRPC")
RUNTIME = "distributed"


# --------------------------------------------------------------------------- client persistence
class SiloStore(SiloHooks):
    """A client's own files: resume states of its last two completed rounds and its checkpoints."""

    def __init__(self, root: Path, name: str, spr: int, num_steps: int, *, resume: bool, overwrite: bool) -> None:
        self.root = Path(root)
        self.name = name
        self.spr = spr
        self.num_steps = num_steps
        self.resume = resume
        self.folder = self.root / "silos" / name
        self.current = self.folder / "resume.pt"
        self.previous = self.folder / "resume.prev.pt"
        self._pending: Optional[Tuple[int, Dict[str, torch.Tensor]]] = None
        if not resume:
            if self.current.exists() and not overwrite:
                raise FileExistsError(f"{self.folder} holds an earlier run of client {name}; pass --resume to "
                                      "continue it, --overwrite to replace it, or set another prr_results_dir")
            shutil.rmtree(self.folder, ignore_errors=True)
            for kind in ("best", "last"):
                (self.root / "checkpoints" / kind / f"{name}.pt").unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _saved(self) -> List[Tuple[int, Path]]:
        """``(step, file)`` of this client's saved states, newest first (read without unpickling code)."""
        found = []
        for path in (self.current, self.previous):
            if path.exists():
                found.append((int(load_state_file(path)["step"]), path))
        return sorted(found, reverse=True)

    def resumed_step(self) -> Optional[int]:
        """The step of the newest saved state, when resuming (None: a fresh start)."""
        saved = self._saved() if self.resume else []
        return saved[0][0] if saved else None

    def start(self, client: FederatedClient, step: int) -> None:
        if step == 0:
            if self.resume:
                logger.warning("client %s: --resume given but the server starts a new run", self.name)
            return
        usable = [(s, path) for s, path in self._saved() if s <= step] if self.resume else []
        if not usable:
            logger.warning("client %s joins at step %d with no saved state (%s): it starts from the initial model",
                           self.name, step, "none at or before that step" if self.resume else "no --resume")
            return
        saved_step, path = usable[0]
        client.load_state_dict(load_state_file(path)["client"])
        if saved_step == step:
            logger.info("client %s resumed at step %d from %s", self.name, step, path)
        else:
            logger.warning("client %s rejoins at step %d with its state of step %d (%s): it missed the steps between",
                           self.name, step, saved_step, path)

    def uploaded(self, client: FederatedClient, step: int) -> None:
        next_step = step + 1
        if next_step <= self.num_steps and round_closed_by(next_step, self.spr) is not None:
            if self.current.exists():
                os.replace(self.current, self.previous)
            atomic_torch_save({"step": next_step, "client": client.state_dict()}, self.current)

    def round_completed(self, client: FederatedClient, records: List[Dict[str, Any]]) -> None:
        state = {k: v.detach().cpu().clone() for k, v in client.reported_model().state_dict().items()}
        save_checkpoint(self.root, "last", self.name, state)
        self._pending = (max(r["round"] for r in records), state)

    def selected(self, client: FederatedClient, round_idx: int) -> None:
        if self._pending is not None and self._pending[0] == round_idx:
            save_checkpoint(self.root, "best", self.name, self._pending[1])
            self._pending = None


# --------------------------------------------------------------------------- the run
def _exit_now(message: str) -> None:
    logger.error(message)
    print(f"fedml-prr: {message}", file=sys.stderr, flush=True)
    os._exit(3)


def _policy(config: RunConfig, backend: str) -> Policy:
    f = config.federation
    return Policy(dropout=f.dropout, step_deadline=f.step_deadline_s or None,
                  heartbeat_timeout=f.heartbeat_timeout_s if backend == "GRPC" else None,
                  startup_timeout=f.startup_timeout_s)


def _link(config: RunConfig, *, backend: str, rank: int, comm, accepted, on_heartbeat=None):
    if backend == "MPI":
        return MpiLink(comm, rank, comm.Get_size())
    path = config.fedml.get("grpc_ipconfig_path")
    if not path:
        raise ValueError("backend GRPC needs grpc_ipconfig_path (comm_args) pointing at a CSV "
                         "eid,rank,grpc_server_ip,grpc_server_port with one line per party")
    f = config.federation
    tls = None if f.insecure else TlsFiles(Path(f.tls_cert or ""), Path(f.tls_key or ""), Path(f.tls_ca or ""))
    if tls is not None and not (f.tls_cert and f.tls_key and f.tls_ca):
        raise ValueError("backend GRPC needs this party's TLS kit: prr_tls_cert, prr_tls_key and prr_tls_ca (make the "
                         "kits with `fedml-prr provision`), or --insecure for plain TCP on a closed test network")
    addresses = {r: p.address for r, p in read_grpc_ipconfig(path).items()}
    return GrpcLink(rank, addresses, accepted=accepted, tls=tls, insecure=f.insecure, listen_host=f.listen_host,
                    max_message_bytes=int(f.max_message_mb * (1 << 20)), on_heartbeat=on_heartbeat)


def run_server(config: RunConfig, info: FederationInfo, *, backend: str, comm=None, resume: bool = False,
               overwrite: bool = False) -> RunResult:
    """Rank 0 of a distributed run: the coordinator, no data.  Returns the run's result."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not a distributed backend; use one of {BACKENDS} (or sp)")
    check_federation(config, info)
    spec = get_algorithm(config.algorithm)
    k = len(info.clients)
    if config.options.threads:
        torch.set_num_threads(config.options.threads)
    server, validator = build_server(config, spec.server, k, info.num_classes)
    per_round = config.clients_per_round if config.clients_per_round is not None else k
    coordinator = Coordinator(server, validator=validator, min_clients=config.federation.min_uploads(min(per_round, k)),
                              clients_per_round=per_round)
    store, state = open_results(config, task_named(info.task), resume=resume, overwrite=overwrite, runtime=RUNTIME)
    coordinator.store = store
    elapsed_before = 0.0
    if state is not None:
        coordinator.load_state_dict(state)
        elapsed_before = float(state["elapsed"])
        logger.info("server resuming %s at step %d of %d", config.algorithm, coordinator.step, coordinator.num_steps)
    started = time.perf_counter()

    def save_round(c: Coordinator) -> None:
        if c.closing_round is not None:
            store.save_resume({**c.state_dict(), "runtime": RUNTIME, "completed_rounds": c.closing_round,
                               "elapsed": elapsed_before + time.perf_counter() - started})

    aggregator = AlgorithmServerAggregator(torch.nn.Identity(), SimpleNamespace(), coordinator=coordinator,
                                           on_aggregated=save_round)
    manager: Optional[ServerManager] = None
    link = _link(config, backend=backend, rank=0, comm=comm, accepted=_accepted(spec, SERVER_RECEIVES),
                 on_heartbeat=lambda rank: manager.heartbeat(rank) if manager is not None else None)
    manager = ServerManager(link, aggregator, num_clients=k, policy=_policy(config, backend), on_lost=_exit_now,
                            resumed=state is not None)
    try:
        manager.run()
    finally:
        link.stop_receive_message()
    elapsed = elapsed_before + time.perf_counter() - started
    summary = store.summary(run_fields(config, list(info.clients), elapsed, backend=backend,
                                       sampling=coordinator.sampling_summary()))
    return RunResult(summary=summary, results_dir=str(store.root))


def run_client(config: RunConfig, info: FederationInfo, data: ClientData, *, rank: int, backend: str, comm=None,
               resume: bool = False, overwrite: bool = False) -> None:
    """Rank ``rank`` of a distributed run: silo ``rank - 1``, holding only ``data`` (its own)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not a distributed backend; use one of {BACKENDS} (or sp)")
    check_federation(config, info)
    if not 1 <= rank <= len(info.clients):
        raise ValueError(f"rank {rank} is outside 1..{len(info.clients)} (0 = server, 1..{len(info.clients)} = clients)")
    silo = rank - 1
    if data.name != info.clients[silo]:
        raise ValueError(f"rank {rank} trains silo {silo} ({info.clients[silo]!r}) but holds the data of {data.name!r}")
    spec = get_algorithm(config.algorithm)
    if spec.client.NEEDS_POOLED_DATA:
        raise ValueError(f"{config.algorithm} trains on every client's data in one place, which a cross-silo "
                         "federation never has; run it with backend sp")
    if config.options.threads:
        torch.set_num_threads(config.options.threads)
    spr = steps_per_round(spec.client.STEPS_PER_ROUND, config.schedule)
    num_steps = total_steps(spr, config.schedule)
    client = spec.client(client_context(config, silo, data, info.num_classes), config.algorithm_params)
    store = SiloStore(Path(config.options.results_dir), data.name, spr, num_steps, resume=resume, overwrite=overwrite)
    trainer = AlgorithmClientTrainer(torch.nn.Identity(), SimpleNamespace(), client=client, num_steps=num_steps,
                                     hooks=store)
    link = _link(config, backend=backend, rank=rank, comm=comm, accepted=_accepted(spec, CLIENT_RECEIVES))
    manager = ClientManager(link, trainer, rank=rank, policy=_policy(config, backend), on_lost=_exit_now,
                            resumed_step=store.resumed_step(), heartbeats=backend == "GRPC")
    try:
        manager.run()
    finally:
        link.stop_receive_message()


def _accepted(spec, kinds):
    table = schemas(spec.client, spec.server)
    return {kind: table[kind] for kind in kinds}


def run_fedml_native(config: RunConfig, federation: Federation, *, algorithm: str, rank: int,
                     overwrite: bool = False) -> Optional[RunResult]:
    """FedML's *own* MPI simulation of ``algorithm`` (``FedML:FedAvg`` / ``FedML:FedProx``) on our data.

    Rank 0 writes the same results folder as our runs (per-client metrics of FedML's global model
    after every round, its checkpoints, the summary), so it lands in the same comparison tables.
    """
    from ..fedml_adapter.fedml_native import run_fedml_mpi

    check_federation(config, federation)
    store = None
    if rank == 0:
        store = ResultsStore(config.options.results_dir, config.schedule.rounds, config.options.selection_fraction)
        store.start_fresh(dict(config.to_dict(), implementation="FedML"), overwrite=overwrite)
    started = time.perf_counter()

    def on_round(round_idx: int, records: List[Dict[str, Any]], states: Dict[str, Any]) -> None:
        store.add_round(round_idx, records, states)
        mean_f1 = sum(r["test"]["macro_f1"] for r in records) / len(records)
        logger.info("FedML:%s round %d: mean test macro-F1 %.1f", algorithm, round_idx, 100 * mean_f1)

    run_fedml_mpi(config, federation, algorithm=algorithm, on_round=on_round)
    if store is None:
        return None
    summary = store.summary(run_fields(config, [c.name for c in federation.clients], time.perf_counter() - started,
                                       algorithm=f"FedML:{algorithm}", backend="MPI"))
    return RunResult(summary=summary, results_dir=str(store.root))
