"""Single-process runtime (``backend: sp``): every silo and the server in one process.

The run drives the protocol directly - no FedML call: a :class:`LocalFederation` holds every
silo's :class:`~fedml_prr.training.federated.FederatedClient` and the
:class:`~fedml_prr.training.coordinator.Coordinator`; one protocol step delivers the server's
messages, trains every silo and aggregates their uploads.  (FedML's own sp simulator builds its
own trainer and ignores custom ones, FedML issue #565.)  MPI and gRPC carry the same objects'
messages between processes (:mod:`fedml_prr.runtime.distributed`), so for the same config and
seed every runtime ends with the same metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..algorithms import get_algorithm
from ..config import EngineOptions, RunConfig
from ..data.federation import Federation
from ..files import atomic_write_text
from ..training.batched import attach_cohort
from ..training.coordinator import Coordinator
from ..training.federated import FederatedClient, Message
from ..training.results import ResultsStore, open_results, run_fields
from ..training.setup import build_server, context_factory
from ..training.tasks import task_named

logger = logging.getLogger(__name__)

RUNTIME = "single-process"


@dataclass
class LocalFederation:
    """Every party of a run in this process: the clients by silo and the coordinator.

    With client sampling, each round start puts the round's clients on the training device and
    the others on the CPU (:meth:`FederatedClient.set_resident`), and the batched engine
    (``engine_options``) is rebuilt for the round's clients only: device memory grows with the
    clients per round, not with the clients in total.
    """

    clients: Dict[int, FederatedClient]
    coordinator: Coordinator
    engine_options: Optional[EngineOptions] = None  # the batched engine's, None: the loop engine
    cohort_silos: Optional[List[int]] = None  # the silos under the batched engine now

    @property
    def silos(self):
        return sorted(self.clients)

    def deliver(self) -> Optional[int]:
        """Hand every silo the server's message of the current step; when it closes a round,
        record that round (metrics and reported models).  Returns the round closed, if any."""
        closed = self.coordinator.closing_round
        if self.coordinator.sampling and self.coordinator.training_round is not None and self.coordinator.round_start:
            participants = set(self.coordinator.participants())
            for silo, client in self.clients.items():
                client.set_resident(silo in participants)
        for silo, message in self.coordinator.messages().items():
            self.clients[silo].receive(message)
        if closed is not None:
            records = [r for silo in self.silos for r in self.clients[silo].pop_records()]
            states = {c.ctx.data.name: c.reported_model().state_dict() for c in self.clients.values()}
            self.coordinator.record(records, states)
            self.coordinator.close_round(closed)
        return closed

    def train(self) -> Dict[int, Message]:
        """Train every participant one step (the current one); their uploads, not yet aggregated."""
        step = self.coordinator.step
        participants = self.coordinator.participants()
        if self.engine_options is not None and participants and participants != self.cohort_silos:
            for client in self.clients.values():
                client.cohort = None
            attach_cohort([self.clients[s] for s in participants], self.engine_options)
            self.cohort_silos = participants
        uploads = {}
        for silo in participants:
            self.clients[silo].train(step)
            uploads[silo] = self.clients[silo].upload()
        return uploads

    def step(self) -> Dict[int, Message]:
        """One whole protocol step: deliver, train, aggregate; returns the uploads."""
        self.deliver()
        uploads = self.train()
        self.coordinator.aggregate(uploads)
        return uploads

    def state_dict(self) -> Dict[str, Any]:
        return {**self.coordinator.state_dict(), "clients": {s: c.state_dict() for s, c in self.clients.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.coordinator.load_state_dict(state)
        for silo, client in self.clients.items():
            client.load_state_dict(state["clients"][silo])


def build_local_federation(config: RunConfig, federation: Federation, *,
                           store: Optional[ResultsStore] = None) -> LocalFederation:
    """Every silo's client and the coordinator of ``config.algorithm`` on ``federation``.

    With ``prr_engine: batched`` the clients are attached to one batched engine
    (:func:`fedml_prr.training.batched.attach_cohort`).
    """
    spec = get_algorithm(config.algorithm)
    make_context = context_factory(config, federation, pooled_data=spec.client.NEEDS_POOLED_DATA)
    k = len(federation.clients)
    if spec.client.NEEDS_POOLED_DATA and config.clients_per_round is not None and config.clients_per_round < k:
        raise ValueError(f"{config.algorithm} trains on every client's data pooled in one place: client_num_per_round "
                         f"({config.clients_per_round}) must equal the number of clients ({k})")
    clients = {silo: spec.client(make_context(silo), config.algorithm_params) for silo in range(k)}
    server, validator = build_server(config, spec.server, k, federation.num_classes)
    coordinator = Coordinator(server, validator=validator, store=store, clients_per_round=config.clients_per_round)
    parties = LocalFederation(clients, coordinator)
    if config.engine_options.engine == "batched":
        parties.engine_options = config.engine_options
        if not coordinator.sampling:  # every silo, every round: one engine for the run
            attach_cohort(list(clients.values()), config.engine_options)
            parties.cohort_silos = list(range(k))
    return parties


@dataclass
class RunResult:
    summary: Dict[str, Any]
    results_dir: str


def run_single_process(config: RunConfig, federation: Federation, *, resume: bool = False,
                       overwrite: bool = False, progress: bool = False) -> RunResult:
    """Train ``config.algorithm`` on ``federation`` in this process; write the results folder.

    Parameters
    ----------
    resume:
        Continue from ``resume.pt`` of ``config.options.results_dir`` (the last completed round);
        the run then ends with the same metrics as an uninterrupted one.
    overwrite:
        Replace an earlier run in the results folder (otherwise that is an error).
    progress:
        Show a tqdm progress bar over protocol steps.
    """
    threads_before = torch.get_num_threads()
    if config.options.threads:
        torch.set_num_threads(config.options.threads)  # process-wide: restored when the run ends
    try:
        return _run(config, federation, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: RunConfig, federation: Federation, *, resume: bool, overwrite: bool, progress: bool) -> RunResult:
    parties = build_local_federation(config, federation)
    task = task_named(federation.task)
    store, state = open_results(config, task, resume=resume, overwrite=overwrite, runtime=RUNTIME)
    coordinator = parties.coordinator
    coordinator.store = store
    atomic_write_text(store.root / "federation.txt", federation.describe() + "\n")  # each client's split
    elapsed_before = 0.0
    if state is not None:
        parties.load_state_dict(state)
        elapsed_before = float(state["elapsed"])
        logger.info("resuming %s at step %d of %d", config.algorithm, coordinator.step, coordinator.num_steps)
    start_step = coordinator.step
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=coordinator.num_steps + 1, initial=start_step, desc=config.algorithm, unit="step")
    while True:
        closed = coordinator.closing_round
        if closed is not None and coordinator.step != start_step:  # a round is complete: save before delivery
            store.save_resume({**parties.state_dict(), "runtime": RUNTIME, "completed_rounds": closed + 1,
                               "elapsed": elapsed_before + time.perf_counter() - started})
        parties.deliver()
        if bar is not None and closed is not None:
            mean_score = sum(r["test"][task.selection_metric] for r in store.rounds[closed]) / len(store.rounds[closed])
            bar.set_postfix({"round": closed, f"test_{task.score_name}": f"{100 * mean_score:.1f}"})
        if coordinator.finished:
            break
        coordinator.aggregate(parties.train())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.update(1)
        bar.close()
    elapsed = elapsed_before + time.perf_counter() - started
    names = [federation.clients[s].name for s in parties.silos]
    summary = store.summary(run_fields(config, names, elapsed, sampling=coordinator.sampling_summary()))
    return RunResult(summary=summary, results_dir=str(store.root))
