"""gRPC between the parties of a cross-silo federation: mutual TLS, typed messages, identities checked.

A FedML communication manager (``BaseCommunicationManager``) in place of FedML 0.9.6's
``GRPCCommManager``, which listens without TLS (on 0.0.0.0 when its address-book line is missing)
and unpickles whatever bytes reach its port, so that any process able to connect could run code
in a party (the flaw class NVFlare fixed after CVE-2022-34668).  Here:

- every party listens on its own address-book line only, with TLS, and requires the caller's
  certificate, signed by the federation's CA (``fedml-prr provision``); it calls the others with
  its own certificate and checks theirs: the name in a receiver's certificate must be the party
  name of the rank it is calling (:func:`~fedml_prr.training.identity.party_name`);
- a message is accepted only from the certificate of the rank it claims as its sender, only of a
  kind this party accepts, only within the size limit, and only if it decodes with the typed codec
  and fits its schema (:mod:`fedml_prr.fedml_adapter.wire`); anything else is refused with a log
  line naming the peer and the reason, and never reaches the protocol.  A TLS handshake without a
  certificate, or with one from another CA, is refused by gRPC's TLS layer before any of our code
  runs (gRPC logs "Handshake failed" with the reason);
- heartbeats (``heartbeat`` messages) are handed to ``on_heartbeat`` as they arrive, never queued,
  so a long aggregation does not delay them.

Plain TCP (``insecure=True``, the ``--insecure`` flag) keeps the codec and the schema checks but
cannot authenticate anyone: the claimed sender is trusted.  It is for a closed test network only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import grpc
from fedml.core.distributed.communication.base_com_manager import BaseCommunicationManager
from fedml.core.distributed.communication.message import Message
from fedml.core.distributed.communication.observer import Observer

from ..training.codec import CodecError, MessageSchema
from ..training.identity import party_name, rank_of, role
from .wire import HEARTBEAT, decode_message, encode_message

logger = logging.getLogger(__name__)

SERVICE, METHOD = "fedml_prr.Party", "Deliver"


class PartyUnreachable(RuntimeError):
    """A message could not be delivered to a party (it is down, or refused the message)."""

    def __init__(self, rank: int, address: str, reason: str) -> None:
        super().__init__(f"{role(rank)} at {address} could not be reached: {reason}")
        self.rank = rank


@dataclass(frozen=True)
class TlsFiles:
    """This party's private key and certificate, and the federation CA's certificate (PEM files)."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> Tuple[bytes, bytes, bytes]:
        files = {"certificate": self.cert, "private key": self.key, "CA certificate": self.ca}
        missing = [f"{what} {path}" for what, path in files.items() if not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(f"missing TLS file(s): {', '.join(missing)}; make the party kits with "
                                    "`fedml-prr provision` and set prr_tls_cert, prr_tls_key, prr_tls_ca")
        return Path(self.cert).read_bytes(), Path(self.key).read_bytes(), Path(self.ca).read_bytes()


class GrpcLink(BaseCommunicationManager):
    """One party's end of the federation's gRPC links (see the module docstring).

    Parameters
    ----------
    rank:
        This party's rank.
    addresses:
        ``rank -> "host:port"`` of every party (the address book, ``grpc_ipconfig_path``).
    accepted:
        The message kinds this party accepts, with their payload schemas.
    tls:
        This party's TLS files; None only with ``insecure=True``.
    listen_host:
        The address to listen on (default: this party's own address-book host).
    max_message_bytes:
        Larger messages are refused (and not sent).
    on_heartbeat:
        Called with the sender's rank for every heartbeat.
    send_timeout:
        Seconds a message may take to be delivered.
    """

    def __init__(self, rank: int, addresses: Mapping[int, str], *, accepted: Mapping[str, MessageSchema],
                 tls: Optional[TlsFiles] = None, insecure: bool = False, listen_host: Optional[str] = None,
                 max_message_bytes: int = 512 << 20, on_heartbeat: Optional[Callable[[int], None]] = None,
                 send_timeout: float = 600.0) -> None:
        if tls is None and not insecure:
            raise ValueError("gRPC needs TLS files (prr_tls_cert, prr_tls_key, prr_tls_ca from `fedml-prr provision`); "
                             "plain TCP needs an explicit --insecure")
        if rank not in addresses:
            raise ValueError(f"rank {rank} has no line in the address book (grpc_ipconfig_path)")
        self.rank = rank
        self.addresses = dict(addresses)
        self.accepted = dict(accepted)
        self.max_message_bytes = int(max_message_bytes)
        self.on_heartbeat = on_heartbeat
        self.send_timeout = send_timeout
        self.insecure = tls is None
        self._pems = None if tls is None else tls.read()
        self._observers: List[Observer] = []
        self.inbox: "queue.Queue[Message]" = queue.Queue()
        self._channels: Dict[int, Tuple[grpc.Channel, Callable]] = {}
        self._lock = threading.Lock()
        self._running = True
        # gRPC's own size check is a backstop well above ours, so ours runs and logs the peer
        self._options = [("grpc.max_send_message_length", 2 * self.max_message_bytes + (1 << 20)),
                         ("grpc.max_receive_message_length", 2 * self.max_message_bytes + (1 << 20)),
                         ("grpc.enable_http_proxy", 0)]
        host, port = self.addresses[rank].rsplit(":", 1)
        self.listen_address = f"{listen_host or host}:{port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=self._options)
        handler = grpc.unary_unary_rpc_method_handler(self._deliver)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        if self.insecure:
            logger.warning("party %s listens WITHOUT TLS on %s (--insecure): anyone who reaches the port can claim "
                           "to be any party", rank, self.listen_address)
            bound = self._server.add_insecure_port(self.listen_address)
        else:
            cert, key, ca = self._pems
            credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
            bound = self._server.add_secure_port(self.listen_address, credentials)
        if not bound:
            raise OSError(f"cannot listen on {self.listen_address} (is the port in use, or the host not this machine's?)")
        self._server.start()
        logger.info("%s listens on %s (%s)", role(rank), self.listen_address, "plain TCP" if self.insecure else "mutual TLS")

    # ----------------------------------------------------------------- receiving
    def _peer(self, context) -> Tuple[Optional[int], str]:
        """The rank the caller's certificate proves (None if none does) and how to name the caller."""
        address = context.peer()
        if self.insecure:
            return None, f"a peer at {address}"
        names = context.auth_context().get("x509_common_name") or []
        rank = rank_of(names[0].decode("utf-8", "replace")) if len(names) == 1 else None
        if rank is None:
            return None, f"a peer at {address} without a party certificate"
        return rank, f"{role(rank)} at {address}"

    def _refuse(self, context, code, why: str) -> bytes:
        logger.error("refused: %s", why)
        context.abort(code, why)
        return b""

    def _deliver(self, request: bytes, context) -> bytes:
        rank, peer = self._peer(context)
        if rank is None and not self.insecure:
            return self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, f"a message from {peer}")
        if len(request) > self.max_message_bytes:
            return self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{peer} sent {len(request)} bytes, more than the limit of {self.max_message_bytes} "
                                "(prr_max_message_mb); nothing of it was used")
        try:
            message = decode_message(request, peer=peer, accepted=self.accepted, max_bytes=self.max_message_bytes)
        except CodecError as error:
            return self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"{error}; nothing of it was used")
        sender = int(message.get_sender_id())
        if rank is not None and sender != rank:
            return self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                                f"{peer} sent a message claiming to come from rank {sender}; nothing of it was used")
        if int(message.get_receiver_id()) != self.rank:
            return self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                                f"{peer} sent a message for rank {message.get_receiver_id()} to rank {self.rank}")
        if message.get_type() == HEARTBEAT:
            if self.on_heartbeat is not None:
                self.on_heartbeat(sender)
        else:
            self.inbox.put(message)
        return b""

    def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next accepted message (None when none came within ``timeout`` seconds)."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    # ----------------------------------------------------------------- sending
    def _stub(self, receiver: int):
        with self._lock:
            if receiver not in self._channels:
                if receiver not in self.addresses:
                    raise ValueError(f"rank {receiver} has no line in the address book (grpc_ipconfig_path)")
                address = self.addresses[receiver]
                if self.insecure:
                    channel = grpc.insecure_channel(address, options=self._options)
                else:
                    cert, key, ca = self._pems
                    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                               certificate_chain=cert)
                    channel = grpc.secure_channel(address, credentials, options=self._options + [
                        ("grpc.ssl_target_name_override", party_name(receiver))])
                self._channels[receiver] = (channel, channel.unary_unary(f"/{SERVICE}/{METHOD}"))
            return self._channels[receiver][1]

    def send_message(self, msg: Message, *, timeout: Optional[float] = None) -> None:
        """Deliver ``msg`` to its receiver; :class:`PartyUnreachable` when that fails."""
        receiver = int(msg.get_receiver_id())
        data = encode_message(msg)
        if len(data) > self.max_message_bytes:
            raise ValueError(f"a {msg.get_type()} message of {len(data)} bytes is over the limit of "
                             f"{self.max_message_bytes} (prr_max_message_mb); raise it on every party")
        try:
            self._stub(receiver)(data, timeout=timeout or self.send_timeout)
        except grpc.RpcError as error:
            raise PartyUnreachable(receiver, self.addresses[receiver],
                                   f"{error.code().name}: {error.details()}") from None

    # ----------------------------------------------------------------- FedML's manager interface
    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def handle_receive_message(self) -> None:
        """Dispatch every message to the observers until :meth:`stop_receive_message` (FedML's loop)."""
        while self._running:
            message = self.receive(timeout=0.1)
            if message is not None:
                for observer in list(self._observers):
                    observer.receive_message(message.get_type(), message)

    def stop_receive_message(self) -> None:
        self._running = False
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()
        self._server.stop(grace=0.5)


def wait_for(link: GrpcLink, send: Callable[[], None], *, timeout: float, what: str, interval: float = 0.5) -> None:
    """Call ``send`` until it does not raise :class:`PartyUnreachable` (a TimeoutError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            send()
            return
        except PartyUnreachable as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not answer within {timeout:.0f} s ({error}); start it, or check "
                                   "grpc_ipconfig_path and the TLS files") from None
            time.sleep(interval)
