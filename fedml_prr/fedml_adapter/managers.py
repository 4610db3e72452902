"""The server's and the clients' side of a distributed run, over FedML's communication layer.

FedML's cross-silo managers (``FedMLServerManager``, ``ClientMasterManager``) wait for every
client at every round, end every run with a fixed ``time.sleep(5)``, and cannot go on without a
client that died.  These two managers run the same protocol on FedML's ``Message`` objects and
communication managers (FedML's MPI transport, or :class:`~fedml_prr.fedml_adapter.grpc_link.GrpcLink`
over gRPC), driving the FedML ``ServerAggregator`` / ``ClientTrainer`` classes of
:mod:`fedml_prr.fedml_adapter.trainers`:

**Server** (:class:`ServerManager`).  It waits for every client's ``hello`` (the handshake needs
all of them; a resumed server needs ``min_clients``), then, step by step, sends the step's
message to its participants (:meth:`Coordinator.participants`) and collects their uploads until
all have come, a participant is lost (no heartbeat for ``heartbeat_timeout`` seconds, or a
message to it failed), or the step's deadline passes.  With ``dropout: tolerate`` (the default) it
aggregates the uploads that came if there are at least ``min_clients``, and a lost client that
comes back (a restart with ``--resume``: a new ``hello``) takes part again from the next round;
with ``dropout: fail`` a lost client ends the run at once, naming it.  At the end it sends
``end`` and waits for each client's ``bye`` (at most ``end_timeout`` seconds): no fixed sleep.

**Client** (:class:`ClientManager`).  It says ``hello`` (retrying until the server answers),
sends a heartbeat every ``heartbeat_interval`` seconds from a thread of its own, and answers each
``message`` with its ``upload``; ``end`` makes it say ``bye`` and return.  If the server stops
answering heartbeats, it reports that and stops.

Both report a fatal loss through ``on_lost(message)`` (the runtime logs it and exits non-zero).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

from ..training.identity import role
from .grpc_link import PartyUnreachable
from .trainers import AlgorithmClientTrainer, AlgorithmServerAggregator
from .wire import BYE, END, HEARTBEAT, HELLO, MESSAGE, UPLOAD, make, payload_of

logger = logging.getLogger(__name__)

DROPOUT_POLICIES = ("tolerate", "fail")


@dataclass(frozen=True)
class Policy:
    """How a distributed run treats time and missing parties (``prr_`` keys of the same names).

    Attributes
    ----------
    dropout:
        ``tolerate``: go on without a lost client; ``fail``: a lost client ends the run.
    step_deadline:
        Seconds the server waits for a step's uploads (None: no deadline).
    heartbeat_timeout:
        Seconds without a heartbeat after which a client counts as lost (None: no liveness
        check, e.g. under MPI, where a failing rank aborts the whole job).
    startup_timeout:
        Seconds the server waits for the clients' ``hello`` (and a client for the server).
    end_timeout:
        Seconds the server waits for the clients' ``bye``.
    heartbeat_interval, heartbeat_misses:
        A client's heartbeat period, and how many failed in a row mean the server is gone.
    """

    dropout: str = "tolerate"
    step_deadline: Optional[float] = 3600.0
    heartbeat_timeout: Optional[float] = 15.0
    startup_timeout: float = 600.0
    end_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    heartbeat_misses: int = 5

    def __post_init__(self) -> None:
        if self.dropout not in DROPOUT_POLICIES:
            raise ValueError(f"prr_dropout must be one of {DROPOUT_POLICIES}, got {self.dropout!r}")


class ServerManager:
    """Rank 0's loop (see the module docstring).  ``link``: a communication manager with
    ``send_message(msg)`` and ``receive(timeout)``."""

    def __init__(self, link, aggregator: AlgorithmServerAggregator, *, num_clients: int, policy: Policy,
                 on_lost: Callable[[str], None], resumed: bool = False) -> None:
        self.link = link
        self.aggregator = aggregator
        self.coordinator = aggregator.coordinator
        self.ranks = list(range(1, num_clients + 1))
        self.policy = policy
        self.on_lost = on_lost
        self.resumed = resumed
        self.joined: Set[int] = set()
        self.lost: Set[int] = set()
        self.last_seen: Dict[int, float] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- liveness
    def heartbeat(self, rank: int) -> None:
        """A client's heartbeat arrived (called from the transport's receiving threads)."""
        with self._lock:
            self.last_seen[rank] = time.monotonic()

    def _alive(self, rank: int, now: float) -> bool:
        if rank in self.lost:
            return False
        timeout = self.policy.heartbeat_timeout
        if timeout is None:
            return True
        with self._lock:
            seen = self.last_seen.get(rank)
        return seen is not None and now - seen <= timeout

    def _lose(self, rank: int, why: str) -> None:
        message = f"{role(rank)} {why}"
        if self.policy.dropout == "fail":
            self.on_lost(message + "; the run stops (prr_dropout: fail). Restart every party with --resume to continue "
                                   "from the last completed round")
            raise RuntimeError(message)
        self.lost.add(rank)
        self.joined.discard(rank)
        logger.warning("%s; the federation goes on without it until it comes back (restart it with --resume)", message)

    def _handle(self, message, uploads: Optional[Dict[int, dict]] = None, pending: Optional[Set[int]] = None) -> None:
        kind, sender, payload = message.get_type(), int(message.get_sender_id()), payload_of(message)
        if kind == HELLO:
            if sender in self.joined and pending is not None and sender - 1 in pending:
                pending.discard(sender - 1)  # it restarted mid-step: its state is gone; it rejoins at a round start
            self.joined.add(sender)
            self.lost.discard(sender)
            self.heartbeat(sender)
            logger.info("%s joined (its saved state is at step %s)", role(sender), payload.get("resumed_step"))
        elif kind == UPLOAD:
            silo = sender - 1
            if uploads is not None and pending is not None and silo in pending and payload.get("step") == self.coordinator.step:
                uploads[silo] = payload
                pending.discard(silo)
            else:
                logger.warning("ignored an upload of step %s from %s (the server is at step %d)", payload.get("step"),
                               role(sender), self.coordinator.step)
        elif kind == BYE:
            self.joined.discard(sender)

    # ----------------------------------------------------------------- the run
    def run(self) -> None:
        # at the start (fresh or resumed) every client is awaited; a resumed run may go on without
        # the missing ones once the startup timeout has passed (a fresh one cannot: the handshake)
        self._await_clients(len(self.ranks) if not self.resumed else self.coordinator.min_clients, everyone=True)
        while not self.aggregator.finished:
            self._step()
        self._end()

    def _await_clients(self, needed: int, *, everyone: bool = False) -> None:
        """Wait until every client has joined (``everyone``) or ``needed`` have; after the startup
        timeout, go on with ``needed`` or stop naming the missing clients."""
        deadline = time.monotonic() + self.policy.startup_timeout
        while len(self.joined) < (len(self.ranks) if everyone else needed):
            if time.monotonic() > deadline:
                missing = [role(r) for r in self.ranks if r not in self.joined]
                if len(self.joined) >= needed:
                    logger.warning("going on without %s: not there after %.0f s", ", ".join(missing),
                                   self.policy.startup_timeout)
                    return
                self.on_lost(f"{', '.join(missing)} did not come up within {self.policy.startup_timeout:.0f} s "
                             f"({len(self.joined)} of the {needed} needed did); start them, or check grpc_ipconfig_path")
                raise RuntimeError("clients missing at start")
            message = self.link.receive(timeout=0.5)
            if message is not None:
                self._handle(message)

    def _offered(self) -> List[int]:
        now = time.monotonic()
        return [r - 1 for r in sorted(self.joined) if self._alive(r, now)]

    def _step(self) -> None:
        c = self.coordinator
        needed = len(self.ranks) if c.step == 0 else c.min_clients
        if c.round_start and len(self._offered()) < needed:
            logger.warning("step %d: %d client(s) alive, %d needed; waiting for more to join", c.step,
                           len(self._offered()), needed)
            self._await_clients(needed)
        participants = c.participants(self._offered())
        for silo, message in self.aggregator.messages_for(participants).items():
            try:
                self.link.send_message(make(MESSAGE, 0, silo + 1, message))
            except PartyUnreachable as error:
                self._lose(silo + 1, f"could not be reached ({error})")
        uploads = self._collect([s for s in participants if s + 1 not in self.lost])
        if not self.aggregator.finishing and len(uploads) < c.min_clients:
            self.on_lost(f"step {c.step}: {len(uploads)} of {len(participants)} participant(s) uploaded, fewer than "
                         f"prr_min_clients = {c.min_clients}. Restart the parties with --resume to continue from the "
                         "last completed round")
            raise RuntimeError("too few uploads")
        self.aggregator.aggregate([(u["num_samples"], u) for _, u in sorted(uploads.items())])

    def _collect(self, participants: List[int]) -> Dict[int, dict]:
        uploads: Dict[int, dict] = {}
        pending = set(participants)
        deadline = math.inf if self.policy.step_deadline is None else time.monotonic() + self.policy.step_deadline
        while pending:
            message = self.link.receive(timeout=0.2)
            if message is not None:
                self._handle(message, uploads, pending)
                continue
            now = time.monotonic()
            for silo in sorted(pending):
                if not self._alive(silo + 1, now):
                    pending.discard(silo)
                    if silo + 1 not in self.lost:
                        self._lose(silo + 1, f"sent no heartbeat for {self.policy.heartbeat_timeout:.0f} s during "
                                             f"step {self.coordinator.step}")
            if now > deadline and pending:
                for silo in sorted(pending):
                    self._lose(silo + 1, f"did not upload step {self.coordinator.step} within "
                                         f"prr_step_deadline_s = {self.policy.step_deadline:.0f} s")
                pending.clear()
        return uploads

    def _end(self) -> None:
        selected = self.coordinator.selected_round
        waiting = set()
        for rank in sorted(self.joined):
            try:
                self.link.send_message(make(END, 0, rank, {"selected_round": selected}), timeout=30.0)
                waiting.add(rank)
            except PartyUnreachable as error:
                logger.warning("the end message did not reach %s: %s", role(rank), error)
        deadline = time.monotonic() + self.policy.end_timeout
        while waiting and time.monotonic() < deadline:
            message = self.link.receive(timeout=0.1)
            if message is not None and message.get_type() == BYE:
                waiting.discard(int(message.get_sender_id()))
        if waiting:
            logger.warning("no goodbye from %s within %.0f s", ", ".join(role(r) for r in sorted(waiting)),
                           self.policy.end_timeout)


class ClientManager:
    """Rank ``k``'s loop (see the module docstring)."""

    def __init__(self, link, trainer: AlgorithmClientTrainer, *, rank: int, policy: Policy,
                 on_lost: Callable[[str], None], resumed_step: Optional[int] = None, heartbeats: bool = True) -> None:
        self.link = link
        self.trainer = trainer
        self.rank = rank
        self.policy = policy
        self.on_lost = on_lost
        self.resumed_step = resumed_step
        self.heartbeats = heartbeats
        self._done = threading.Event()

    def _beat(self) -> None:
        failures = 0
        while not self._done.wait(self.policy.heartbeat_interval):
            try:
                self.link.send_message(make(HEARTBEAT, self.rank, 0), timeout=2 * self.policy.heartbeat_interval)
                failures = 0
            except PartyUnreachable as error:
                failures += 1
                if failures >= self.policy.heartbeat_misses and not self._done.is_set():
                    self.on_lost(f"the server stopped answering ({failures} heartbeats in a row failed: {error}); it "
                                 "probably failed (see its log). Restart the federation with --resume to continue "
                                 "from the last completed round")
                    return

    def run(self) -> None:
        hello = make(HELLO, self.rank, 0, {"rank": self.rank, "resumed_step": self.resumed_step})
        self._send_hello(hello)
        if self.heartbeats:
            threading.Thread(target=self._beat, name="fedml-prr-heartbeat", daemon=True).start()
        try:
            while True:
                message = self.link.receive(timeout=0.5)
                if message is None:
                    continue
                if message.get_type() == END:
                    self.trainer.finish(payload_of(message).get("selected_round"))
                    self.link.send_message(make(BYE, self.rank, 0), timeout=10.0)
                    return
                self.trainer.set_model_params(payload_of(message))
                self.trainer.train(None, None, None)
                self.link.send_message(make(UPLOAD, self.rank, 0, self.trainer.get_model_params()))
        finally:
            self._done.set()

    def _send_hello(self, hello) -> None:
        deadline = time.monotonic() + self.policy.startup_timeout
        while True:
            try:
                self.link.send_message(hello, timeout=5.0)
                return
            except PartyUnreachable as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server did not answer within {self.policy.startup_timeout:.0f} s "
                                       f"({error}); start it, or check grpc_ipconfig_path and the TLS files") from None
                time.sleep(0.5)


class MpiLink:
    """FedML's MPI communication manager with the ``receive(timeout)`` the managers use."""

    def __init__(self, comm, rank: int, size: int) -> None:
        from fedml.core.distributed.communication.mpi.com_manager import MpiCommunicationManager

        self.manager = MpiCommunicationManager(comm, rank, size)

    def send_message(self, msg, *, timeout: Optional[float] = None) -> None:
        self.manager.send_message(msg)

    def receive(self, timeout: Optional[float] = None):
        import queue

        try:
            return self.manager.q_receiver.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop_receive_message(self) -> None:
        self.manager.stop_receive_message()
