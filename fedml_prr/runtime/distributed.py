"""Distributed runtimes: MPI simulation (``mpirun``) and cross-silo over gRPC, one silo per process.

Rank 0 is the server, rank ``k`` (1..K) trains silo ``k - 1``.  The same protocol objects as in
one process (each silo's client; the server's :class:`~fedml_prr.training.coordinator.Coordinator`)
are carried by FedML's own cross-silo managers (:mod:`fedml_prr.fedml_adapter.cross_silo`), so for
the same config and seed a distributed run ends with the same per-client metrics as
``backend: sp`` (tests/test_distributed.py).

Where things are written (``prr_results_dir``; every party uses its own copy of the path):

- server: ``config.resolved.json``, ``metrics.jsonl``, ``summary.json`` and ``resume.pt`` (its
  state at the last completed round), as a single-process run;
- client of silo ``<name>``: ``checkpoints/{last,best}/<name>.pt`` (its reported model; PRR's
  personalized model never leaves the silo) and ``silos/<name>/resume.pt`` plus the previous one
  (``resume.prev.pt``), so that it can resume at whichever of its last two completed rounds the
  server resumes.

Failures end the job within seconds instead of hanging (FedML leaves the other parties waiting
forever): under MPI the failing rank calls ``MPI_Abort``; over gRPC each client sends heartbeats
to the server's endpoint (:mod:`fedml_prr.fedml_adapter.heartbeat`), and the server, or a client,
exits with an error naming the lost party when they stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..algorithms import get_algorithm
from ..config import RunConfig
from ..data.federation import Federation
from ..fedml_adapter.cross_silo import cross_silo_args, run_client_manager, run_server_manager
from ..fedml_adapter.heartbeat import HeartbeatMonitor, HeartbeatSender
from ..fedml_adapter.trainers import AlgorithmClientTrainer, AlgorithmServerAggregator, SiloHooks
from ..training.coordinator import Coordinator
from ..training.federated import FederatedClient, round_closed_by, steps_per_round, total_steps
from ..files import atomic_torch_save
from ..training.results import ResultsStore, open_results, run_fields, save_checkpoint
from ..training.setup import check_federation, context_factory, resolve_device, update_validator
from ..training.tasks import task_named
from .parties import STARTUP_TIMEOUT_S, read_grpc_ipconfig, wait_until_reachable
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

    def start(self, client: FederatedClient, step: int) -> None:
        if step == 0:
            if self.resume:
                logger.warning("client %s: --resume given but the server starts a new run", self.name)
            return
        if not self.resume:
            raise RuntimeError(f"the server resumed at step {step} but client {self.name} was started without "
                               "--resume; start it with --resume")
        candidates = [p for p in (self.current, self.previous) if p.exists()]
        for path in candidates:
            state = torch.load(path, weights_only=False)
            if state["step"] == step:
                client.load_state_dict(state["client"])
                logger.info("client %s resumed at step %d from %s", self.name, step, path)
                return
        found = [torch.load(p, weights_only=False)["step"] for p in candidates]
        raise RuntimeError(f"client {self.name} has no saved state for step {step} (it has steps {found} in "
                           f"{self.folder}); the server and this client were not interrupted at the same round")

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


def run_distributed(config: RunConfig, federation: Federation, *, rank: int, backend: str, comm=None,
                    resume: bool = False, overwrite: bool = False,
                    watch: bool = True) -> Optional[RunResult]:
    """Run this process's part of a distributed job; the server returns the run's result.

    Parameters
    ----------
    rank:
        0 = server, ``k`` = client of silo ``k - 1``.
    backend:
        ``"MPI"`` (``comm`` is ``MPI.COMM_WORLD``) or ``"GRPC"`` (addresses in ``grpc_ipconfig_path``).
    watch:
        gRPC only: exit with an error when a party this one waits for disappears.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not a distributed backend; use one of {BACKENDS} (or sp)")
    check_federation(config, federation)
    spec = get_algorithm(config.algorithm)
    num_clients = len(federation.clients)
    if not 0 <= rank <= num_clients:
        raise ValueError(f"rank {rank} is outside 0..{num_clients} (0 = server, 1..{num_clients} = clients)")
    num_steps = total_steps(steps_per_round(spec.client.STEPS_PER_ROUND, config.schedule), config.schedule)
    device = resolve_device(config.options.device)
    if config.options.threads:
        torch.set_num_threads(config.options.threads)
    args = cross_silo_args(config.fedml, backend=backend, rank=rank, num_clients=num_clients, num_steps=num_steps,
                           dataset=config.dataset, grpc_ipconfig_path=config.fedml.get("grpc_ipconfig_path"),
                           comm=comm)
    placeholder = torch.nn.Identity()
    parties = read_grpc_ipconfig(args.grpc_ipconfig_path) if backend == "GRPC" else {}

    if rank == 0:
        server = spec.server(num_clients, config.schedule, config.algorithm_params, config.seed)
        validator = update_validator(config, num_clients, federation.num_classes, uniform=spec.server.UNIFORM_UPLOADS)
        coordinator = Coordinator(server, validator=validator)
        heartbeats = None
        if watch and parties:
            heartbeats = HeartbeatMonitor({r: parties[r].address for r in range(1, num_clients + 1)},
                                          done=lambda: coordinator.step > coordinator.num_steps,
                                          on_lost=_exit_now, startup_timeout=STARTUP_TIMEOUT_S)
        return _serve(config, federation, coordinator, args, placeholder, comm=comm, device=device, resume=resume,
                      overwrite=overwrite, heartbeats=heartbeats)

    silo = rank - 1
    client = spec.client(context_factory(config, federation, pooled_data=spec.client.NEEDS_POOLED_DATA)(silo),
                         config.algorithm_params)
    store = SiloStore(Path(config.options.results_dir), federation.clients[silo].name,
                      steps_per_round(spec.client.STEPS_PER_ROUND, config.schedule), num_steps,
                      resume=resume, overwrite=overwrite)
    trainer = AlgorithmClientTrainer(placeholder, args, client=client, num_steps=num_steps, hooks=store)
    if parties:
        # FedML's client sends its ONLINE status as soon as it starts and crashes if the server is
        # not listening yet: wait for it, so that the parties can be started in any order
        wait_until_reachable(parties[0], timeout=STARTUP_TIMEOUT_S)
    if watch and parties:
        HeartbeatSender(parties[0].address, rank, done=lambda: trainer.finished, on_lost=_exit_now).start()
    run_client_manager(args, trainer, comm=comm, rank=rank, num_clients=num_clients, device=device)
    if not trainer.finished:
        raise RuntimeError(f"client rank {rank} stopped before the server's end message")
    return None


def _serve(config: RunConfig, federation: Federation, coordinator: Coordinator, args, placeholder, *, comm, device,
           resume: bool, overwrite: bool, heartbeats: Optional[HeartbeatMonitor]) -> RunResult:
    store, state = open_results(config, task_named(federation.task), resume=resume, overwrite=overwrite,
                                runtime=RUNTIME)
    coordinator.store = store
    elapsed_before = 0.0
    if state is not None:
        coordinator.load_state_dict(state)
        elapsed_before = float(state["elapsed"])
        logger.info("server resuming %s at step %d of %d", config.algorithm, coordinator.step, coordinator.num_steps)
    started = time.perf_counter()

    def save_round(c: Coordinator) -> None:
        if c.closing_round is not None:
            store.save_resume({**c.state_dict(), "runtime": RUNTIME, "completed_rounds": c.closing_round + 1,
                               "elapsed": elapsed_before + time.perf_counter() - started})

    aggregator = AlgorithmServerAggregator(placeholder, args, coordinator=coordinator, on_aggregated=save_round)
    run_server_manager(args, aggregator, comm=comm, num_clients=coordinator.num_clients, device=device,
                       heartbeats=heartbeats)
    if not aggregator.finished:
        raise RuntimeError("the server stopped before every client reported its last round")
    if coordinator.incomplete_rounds:
        raise RuntimeError(f"rounds {coordinator.incomplete_rounds} are missing records from some clients")
    elapsed = elapsed_before + time.perf_counter() - started
    summary = store.summary(run_fields(config, [c.name for c in federation.clients], elapsed, backend=args.backend))
    return RunResult(summary=summary, results_dir=str(store.root))


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
