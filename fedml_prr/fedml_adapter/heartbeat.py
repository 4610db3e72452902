"""Liveness of a gRPC federation: client heartbeats through the server's own FedML endpoint.

gRPC gives FedML no failure detector: a party whose peer died waits forever.  Each client sends a
tiny heartbeat every ``interval`` seconds to the server's FedML gRPC service - the same endpoint
and call (``sendMessage``) its real messages use, so a heartbeat arrives whenever the client
could send an update.  The server notes the arrival in the gRPC thread that receives it (before
FedML's queue, so a long aggregation does not delay it) and never puts it in the queue.

- The server (:class:`HeartbeatMonitor`) reports a client silent for ``timeout`` seconds (it
  died, or its machine did), or one that never sent a first heartbeat within ``startup_timeout``.
- A client (:class:`HeartbeatSender`) reports the server when ``misses`` sends in a row fail.

Either reports through ``on_lost(message)`` (the runtime logs and exits non-zero); ``done()``
True stops both (a normal end: the parties exit on their own).  No party probes another's port,
so nothing depends on the server being able to open connections to the clients.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Mapping, Optional

logger = logging.getLogger(__name__)

#: a heartbeat's payload is this prefix + the sender's rank; it is never a valid pickle, so it
#: cannot be mistaken for a FedML message
HEARTBEAT_PREFIX = b"fedml-prr-heartbeat:"


def is_heartbeat(payload: bytes) -> bool:
    return isinstance(payload, bytes) and payload.startswith(HEARTBEAT_PREFIX)


def role(rank: int) -> str:
    return "the server" if rank == 0 else f"client rank {rank} (silo {rank - 1})"


class HeartbeatSender(threading.Thread):
    """A client's heartbeat to the server, and its watch of the server.

    Parameters
    ----------
    server:
        The server's ``host:port`` (rank 0 of ``grpc_ipconfig_path``).
    rank:
        This client's rank.
    interval:
        Seconds between heartbeats (each send waits at most ``2 * interval``).
    misses:
        Failed sends in a row after which the server counts as lost.
    """

    def __init__(self, server: str, rank: int, *, done: Callable[[], bool], on_lost: Callable[[str], None],
                 interval: float = 1.0, misses: int = 5) -> None:
        super().__init__(name="fedml-prr-heartbeat", daemon=True)
        self.server, self.rank = server, rank
        self.done, self.on_lost = done, on_lost
        self.interval, self.misses = interval, misses
        self.sent = 0

    def run(self) -> None:
        import grpc
        from fedml.core.distributed.communication.grpc import grpc_comm_manager_pb2 as pb2
        from fedml.core.distributed.communication.grpc import grpc_comm_manager_pb2_grpc as pb2_grpc

        channel = grpc.insecure_channel(self.server, options=[("grpc.enable_http_proxy", 0)])
        stub = pb2_grpc.gRPCCommManagerStub(channel)
        request = pb2.CommRequest(client_id=self.rank, message=HEARTBEAT_PREFIX + str(self.rank).encode())
        failures = 0
        try:
            while not self.done():
                try:
                    stub.sendMessage(request, timeout=2 * self.interval)
                    failures, self.sent = 0, self.sent + 1
                except grpc.RpcError as error:
                    failures += 1
                    logger.debug("heartbeat to the server failed (%d in a row): %s", failures, error)
                    if failures >= self.misses and not self.done():
                        self.on_lost(f"the server at {self.server} stopped answering "
                                     f"({failures} heartbeats in a row failed); it probably failed (see its log). "
                                     "Restart the federation with --resume to continue from the last completed round")
                        return
                time.sleep(self.interval)
        finally:
            channel.close()


class HeartbeatMonitor(threading.Thread):
    """The server's watch of its clients' heartbeats (see the module docstring).

    Call :meth:`attach` with the server's FedML gRPC comm manager before it receives messages
    from clients; heartbeats are then recorded as they arrive and kept out of FedML's queue.
    """

    def __init__(self, clients: Mapping[int, str], *, done: Callable[[], bool], on_lost: Callable[[str], None],
                 interval: float = 1.0, timeout: float = 15.0, startup_timeout: float = 600.0) -> None:
        super().__init__(name="fedml-prr-heartbeat-monitor", daemon=True)
        self.clients = dict(clients)  # rank -> host:port
        self.done, self.on_lost = done, on_lost
        self.interval, self.timeout, self.startup_timeout = interval, timeout, startup_timeout
        self.last_seen: Dict[int, Optional[float]] = {rank: None for rank in self.clients}
        self._lock = threading.Lock()

    def beat(self, payload: bytes) -> None:
        """Record a heartbeat payload (called from gRPC's receiving threads)."""
        try:
            rank = int(payload[len(HEARTBEAT_PREFIX):])
        except ValueError:
            logger.warning("ignored a malformed heartbeat %r", payload[:64])
            return
        with self._lock:
            if rank in self.last_seen:
                self.last_seen[rank] = time.monotonic()

    def attach(self, com_manager) -> None:
        """Divert heartbeats from ``com_manager``'s message queue to :meth:`beat`."""
        incoming = com_manager.grpc_servicer.message_q
        put = incoming.put

        def put_or_beat(item, *args, **kwargs):
            if is_heartbeat(item):
                self.beat(item)
            else:
                put(item, *args, **kwargs)

        incoming.put = put_or_beat

    def silent(self, now: float, started: float) -> Optional[str]:
        """The loss to report at time ``now``, if any."""
        with self._lock:
            seen = dict(self.last_seen)
        for rank, last in sorted(seen.items()):
            address = self.clients[rank]
            if last is None and now - started > self.startup_timeout:
                return (f"{role(rank)} at {address} did not come up within "
                        f"{self.startup_timeout:.0f} s; start it, or check grpc_ipconfig_path")
            if last is not None and now - last > self.timeout:
                return (f"{role(rank)} at {address} sent no heartbeat for {now - last:.0f} s; "
                        "it probably failed (see its log). Restart the federation with --resume to continue "
                        "from the last completed round")
        return None

    def run(self) -> None:
        started = time.monotonic()
        while not self.done():
            lost = self.silent(time.monotonic(), started)
            if lost is not None and not self.done():
                self.on_lost(lost)
                return
            time.sleep(self.interval)
