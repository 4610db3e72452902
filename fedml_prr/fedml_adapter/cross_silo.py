"""FedML's cross-silo managers carrying our protocol: MPI simulation and gRPC cross-silo.

FedML 0.9.6 refuses every algorithm but FedAvg in its cross-silo entry points and its MPI
simulator broadcasts one global model.  Its cross-silo *managers* (``FedMLServerManager``,
``ClientMasterManager``) and comm backends (MPI, gRPC) are generic, though: built directly, as
FedML's own ``init_server`` / ``init_client`` build them, they carry our protocol messages
(:mod:`fedml_prr.fedml_adapter.trainers`) unchanged, and a plain ``dict`` keyed by silo from the
aggregator makes the server send each silo its own message (FEDML_NOTES.md).  One process per
silo; rank 0 is the server.

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
from typing import Any, Mapping, Optional

import torch

from .heartbeat import HeartbeatMonitor, is_heartbeat
from .offline import fedml_args, init_fedml_offline
from .trainers import AlgorithmClientTrainer, AlgorithmServerAggregator

logger = logging.getLogger(__name__)


def cross_silo_args(fedml_keys: Mapping[str, Any], *, backend: str, rank: int, num_clients: int, num_steps: int,
                    dataset: str, grpc_ipconfig_path: Optional[str] = None, comm=None):
    """FedML's args for one party of a cross-silo run (``num_steps`` protocol steps + the report step)."""
    client_ids = list(range(1, num_clients + 1)) if rank == 0 else [rank]
    extra = dict(training_type="cross_silo", backend=backend, scenario="horizontal", rank=rank,
                 role="server" if rank == 0 else "client", comm_round=num_steps + 1,
                 client_num_in_total=num_clients, client_num_per_round=num_clients, worker_num=num_clients,
                 client_id_list=str(client_ids), frequency_of_the_test=1, test_on_clients="no",
                 dataset=dataset, skip_log_model_net=True)
    if backend == "GRPC":
        if not grpc_ipconfig_path:
            raise ValueError("backend GRPC needs grpc_ipconfig_path (comm_args) pointing at a CSV "
                             "eid,rank,grpc_server_ip,grpc_server_port with one line per party")
        extra["grpc_ipconfig_path"] = str(grpc_ipconfig_path)
    args = init_fedml_offline(fedml_args(fedml_keys, **extra))
    if backend == "MPI":
        args.comm = comm
    return args


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


def run_server_manager(args, aggregator: AlgorithmServerAggregator, *, comm, num_clients: int,
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


def run_client_manager(args, trainer: AlgorithmClientTrainer, *, comm, rank: int, num_clients: int,
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
