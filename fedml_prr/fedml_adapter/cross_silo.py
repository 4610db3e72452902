"""FedML's cross-silo managers running our trainers: MPI simulation and gRPC cross-silo.

FedML 0.9.6 refuses every algorithm but FedAvg in its cross-silo entry points and its MPI
simulator broadcasts one global model.  Its cross-silo *managers* (``FedMLServerManager``,
``ClientMasterManager``) and comm backends (MPI, gRPC) are generic, though: built directly, as
FedML's own ``init_server`` / ``init_client`` build them, they carry our protocol messages
unchanged, and a plain ``dict`` keyed by silo from the aggregator makes the server send each
silo its own message (FEDML_NOTES.md).  One process per silo; rank 0 is the server.

How FedML's flow maps onto the protocol of :mod:`fedml_prr.training.federated`:

=============================  ===============================================================
FedML                          protocol
=============================  ===============================================================
init message / sync message    the server's message of step ``s`` (``s = 0`` at a fresh start)
client ``train`` + upload      training step ``s`` (step 0: the class-count handshake)
sync after step ``N - 1``      the final delivery (``N = num_steps``): clients evaluate
client ``train`` at step N     the *report* step: nothing is trained, the upload carries the
                               metric records of the last round
sync after step ``N``          the end message: FedML's client then reports FINISHED and exits
=============================  ===============================================================

Metric records of a completed round travel to the server inside the next upload (``records``);
the server writes them.  A client is told which round is the selected one (``selected_round``) so
it can keep its best checkpoint locally: personalized models never leave the silo.

FedML 0.9.6 workarounds here (its files are never edited):

- its gRPC receive loop busy-spins one core per process (``time.sleep`` sits after the loop) and
  its MPI loop polls every 0.1 ms: :func:`quiet_receive_loop` replaces the instance's loop with a
  blocking queue wait that dispatches exactly as FedML's does;
- FedML's client counts its own rounds (``comm_round`` trains, then it finishes): a resumed
  client starts at step ``s``, so its budget is set from the first message it receives.
"""

from __future__ import annotations

import logging
import pickle
import queue
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from ..training.federated import ClientContext, FederatedClient, FederatedServer, Message
from ..training.validation import UpdateValidator
from .heartbeat import HeartbeatMonitor, is_heartbeat
from .trainers import AlgorithmClientTrainer, AlgorithmServerAggregator

logger = logging.getLogger(__name__)


class SiloHooks:
    """What a runtime does around one silo's protocol (persistence); every hook is optional."""

    def start(self, client: FederatedClient, step: int) -> None:
        """The first message this process receives for ``client`` is of ``step`` (> 0: resume)."""

    def selected(self, client: FederatedClient, round_idx: int) -> None:
        """The server announces ``round_idx`` as the selected (best) round so far."""

    def round_completed(self, client: FederatedClient, records: List[Dict[str, Any]]) -> None:
        """``client`` finished evaluating a round (records as uploaded)."""

    def uploaded(self, client: FederatedClient, step: int) -> None:
        """``client`` uploaded step ``step``; its state is now that before the next message."""


class CrossSiloClientTrainer(AlgorithmClientTrainer):
    """The client trainer of one silo process; see the module docstring for the extra steps."""

    def __init__(self, model, args, *, spec, params, make_context: Callable[[int], ClientContext],
                 num_steps: int, hooks: Optional[SiloHooks] = None) -> None:
        super().__init__(model, args, spec=spec, params=params, make_context=make_context)
        self.num_steps = num_steps
        self.hooks = hooks or SiloHooks()
        #: called with the first step received (the runtime sets FedML's round budget from it)
        self.on_first_step: Optional[Callable[[int], None]] = None
        self._outgoing: Dict[int, List[Dict[str, Any]]] = {}
        self.finished = False

    def set_model_params(self, model_parameters: Message) -> None:
        message = model_parameters
        silo = self.silo_of(message)
        step = int(message["step"])
        first = silo not in self.clients
        client = self.client(silo)
        if first:
            self.hooks.start(client, step)
            if self.on_first_step is not None:
                self.on_first_step(step)
        if message.get("selected_round") is not None:
            self.hooks.selected(client, int(message["selected_round"]))
        self.id = silo
        if message.get("end"):
            self.finished = True
            return
        client.receive(message)
        self._step[silo] = step
        records = client.pop_records()
        if records:
            self.hooks.round_completed(client, records)
            self._outgoing.setdefault(silo, []).extend(records)

    def train(self, train_data, device, args) -> None:
        if self._step[self.id] < self.num_steps:  # at num_steps: the report step, nothing to train
            super().train(train_data, device, args)

    def get_model_params(self) -> Message:
        silo, client = self.id, self.clients[self.id]
        step = self._step[silo]
        if step == self.num_steps:
            upload: Message = {"silo": silo, "step": step, "num_samples": len(client.train_split)}
        else:
            upload = client.upload()
        upload["records"] = self._outgoing.pop(silo, [])
        self.hooks.uploaded(client, step)
        return upload


class CrossSiloServerAggregator(AlgorithmServerAggregator):
    """The server of a distributed run: validation, metric records, the report and end steps.

    Parameters
    ----------
    on_records:
        ``records -> selected_round``: stores completed rounds' metric records (all silos of a
        round arrive in the same step) and returns the selected round so far (or None).
    on_aggregated:
        Called with this aggregator after each successful training-step aggregation (resume
        checkpoints).
    """

    def __init__(self, model, args, *, server: FederatedServer, validator: Optional[UpdateValidator] = None,
                 on_records: Optional[Callable[[List[Dict[str, Any]]], Optional[int]]] = None,
                 on_aggregated: Optional[Callable[["CrossSiloServerAggregator"], None]] = None) -> None:
        super().__init__(model, args, server=server, validator=validator)
        self.on_records = on_records
        self.on_aggregated = on_aggregated
        self.selected_round: Optional[int] = None
        self.finished = False

    def get_model_params(self) -> Dict[int, Message]:
        if self.step > self.server.num_steps:
            return {silo: {"silo": silo, "step": self.step, "end": True, "selected_round": self.selected_round}
                    for silo in range(self.server.num_clients)}
        messages = super().get_model_params()
        for message in messages.values():
            message["selected_round"] = self.selected_round
        return messages

    def aggregate(self, raw_client_model_or_grad_list: List[Tuple[float, Message]]) -> Dict[int, Message]:
        uploads = self.uploads_by_silo(raw_client_model_or_grad_list)
        records = self._records_of(uploads)
        stripped = [(n, {k: v for k, v in u.items() if k != "records"}) for n, u in raw_client_model_or_grad_list]
        if self.step == self.server.num_steps:  # the report step: only records
            steps = {u.get("step") for u in uploads.values()}
            if steps != {self.step} or set(uploads) != set(range(self.server.num_clients)):
                raise ValueError(f"report step {self.step}: got steps {sorted(map(str, steps))} from silos "
                                 f"{sorted(uploads)}")
            self.step += 1
        else:
            super().aggregate(stripped)
        if records and self.on_records is not None:
            self.selected_round = self.on_records(records)
        if self.step > self.server.num_steps:
            self.finished = True
        elif self.on_aggregated is not None:
            self.on_aggregated(self)
        return self.get_model_params()

    @staticmethod
    def _records_of(uploads: Mapping[int, Message]) -> List[Dict[str, Any]]:
        records = []
        for silo in sorted(uploads):
            for record in uploads[silo].get("records", []):
                if not isinstance(record, Mapping) or record.get("silo") != silo:
                    raise ValueError(f"silo {silo} uploaded a metric record of silo "
                                     f"{record.get('silo') if isinstance(record, Mapping) else record!r}")
                records.append(dict(record))
        return records


# --------------------------------------------------------------------------- FedML managers
def quiet_receive_loop(com_manager) -> None:
    """Replace a FedML comm manager's polling receive loop with a blocking wait (FedML 0.9.6 workaround).

    FedML's gRPC loop (``message_handling_subroutine``) spins without sleeping, one core per
    process; its MPI loop polls every 0.1 ms.  The replacement waits on the same queue and
    dispatches messages exactly as FedML does (the gRPC one also records unknown senders).
    """
    from fedml.core.distributed.communication.grpc.grpc_comm_manager import GRPCCommManager, GRPCMapping
    from fedml.core.distributed.communication.mpi.com_manager import MpiCommunicationManager

    if isinstance(com_manager, GRPCCommManager):
        incoming = com_manager.grpc_servicer.message_q

        def grpc_loop() -> None:
            while com_manager.is_running:
                try:
                    payload = incoming.get(timeout=0.05)
                except queue.Empty:
                    continue
                if is_heartbeat(payload):  # one that arrived before HeartbeatMonitor.attach
                    continue
                message = pickle.loads(payload)
                sender = int(message.get_sender_id())
                if sender not in com_manager.grpc_mappings:
                    params = message.get_params()
                    ip = str(params[GRPCCommManager.MSG_ARG_KEY_SENDER_IP])
                    com_manager.grpc_mappings[sender] = GRPCMapping(
                        eid=sender, rank=int(params[GRPCCommManager.MSG_ARG_KEY_SENDER_RANK]), grpc_server_ip=ip,
                        grpc_server_port=int(params[GRPCCommManager.MSG_ARG_KEY_SENDER_PORT]), ingress_ip=ip)
                for observer in list(com_manager._observers):
                    observer.receive_message(message.get_type(), message)

        com_manager.message_handling_subroutine = grpc_loop
    elif isinstance(com_manager, MpiCommunicationManager):
        incoming = com_manager.q_receiver

        def mpi_loop() -> None:
            com_manager._notify_connection_ready()
            while not com_manager._stop_running:
                try:
                    message = incoming.get(timeout=0.05)
                except queue.Empty:
                    continue
                com_manager.notify(message)

        com_manager.handle_receive_message = mpi_loop


def run_server_manager(args, aggregator: CrossSiloServerAggregator, *, comm, num_clients: int,
                       device: torch.device, heartbeats: Optional[HeartbeatMonitor] = None) -> None:
    """Serve until every client has finished (FedML's ``init_server``, minus its name gate).

    ``heartbeats`` (gRPC): attached to the server's endpoint and started before serving.
    """
    from fedml.cross_silo.server.fedml_aggregator import FedMLAggregator
    from fedml.cross_silo.server.fedml_server_manager import FedMLServerManager

    aggregator.set_id(0)
    fedml_aggregator = FedMLAggregator(None, None, 0, {}, {}, {}, num_clients, device, args, aggregator)
    manager = FedMLServerManager(args, fedml_aggregator, comm, 0, num_clients, args.backend)
    quiet_receive_loop(manager.com_manager)
    if heartbeats is not None:
        heartbeats.attach(manager.com_manager)
        heartbeats.start()
    manager.run()


def run_client_manager(args, trainer: CrossSiloClientTrainer, *, comm, rank: int, num_clients: int,
                       device: torch.device) -> None:
    """Train silo ``rank - 1`` until the server's end message (FedML's ``init_client``)."""
    from fedml.cross_silo.client.fedml_client_master_manager import ClientMasterManager
    from fedml.cross_silo.client.fedml_trainer_dist_adapter import TrainerDistAdapter

    adapter = TrainerDistAdapter(args, device, rank, trainer.model, 0, None, None, None, trainer)
    manager = ClientMasterManager(args, adapter, comm, rank, num_clients, args.backend)
    total = int(args.comm_round)
    # FedML's client trains `num_rounds` times, then finishes on the next message
    trainer.on_first_step = lambda step: setattr(manager, "num_rounds", total - step)
    quiet_receive_loop(manager.com_manager)
    manager.run()
