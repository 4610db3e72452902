"""What parties of a distributed run send each other: FedML ``Message`` objects of six kinds.

Every message is a FedML :class:`~fedml.core.distributed.communication.message.Message` whose
type is one of the kinds below and whose ``payload`` parameter is a plain dict:

=========== =================== ===============================================================
kind        direction           payload
=========== =================== ===============================================================
hello       client -> server    ``rank``, ``resumed_step`` (the step its saved state is at, or None)
message     server -> client    the protocol message of a step (training/federated.py)
upload      client -> server    the protocol upload of a step, with finished-round ``records``
heartbeat   client -> server    nothing: the client is alive
end         server -> client    ``selected_round``: the run is over
bye         client -> server    nothing: the client got the end and exits
=========== =================== ===============================================================

Over gRPC, :func:`encode_message` / :func:`decode_message` carry them with the typed codec
(:mod:`fedml_prr.training.codec`: safetensors tensors, JSON fields, no pickle) and check each
payload against its schema, which includes the running algorithm's own fields.  Under MPI (one
job, one machine, processes started together by ``mpirun``) FedML's MPI transport carries the
same objects with mpi4py's pickle: every party there is part of the same job and nothing reaches
it from outside.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from fedml.core.distributed.communication.message import Message

from ..training.codec import (PROTOCOL_MESSAGE, PROTOCOL_UPLOAD, CodecError, MessageSchema, decode, encode, integer,
                              optional)

HELLO, MESSAGE, UPLOAD, HEARTBEAT, END, BYE = "hello", "message", "upload", "heartbeat", "end", "bye"
PAYLOAD = "payload"

#: what the server accepts, and what a client accepts (the protocol parts; see :func:`schemas`)
SERVER_RECEIVES = (HELLO, UPLOAD, HEARTBEAT, BYE)
CLIENT_RECEIVES = (MESSAGE, END)


def make(kind: str, sender: int, receiver: int, payload: Optional[Mapping[str, Any]] = None) -> Message:
    message = Message(kind, sender, receiver)
    message.add_params(PAYLOAD, dict(payload or {}))
    return message


def payload_of(message: Message) -> Dict[str, Any]:
    return message.get(PAYLOAD) or {}


def schemas(client_class, server_class) -> Dict[str, MessageSchema]:
    """The schema of each kind's payload for the running algorithm's client and server classes."""
    return {
        HELLO: MessageSchema("hello", {"rank": integer, "resumed_step": optional(integer)}, required=("rank",)),
        MESSAGE: PROTOCOL_MESSAGE.extended(server_class.MESSAGE_FIELDS),
        UPLOAD: PROTOCOL_UPLOAD.extended(client_class.UPLOAD_FIELDS),
        HEARTBEAT: MessageSchema("heartbeat", {}),
        END: MessageSchema("end message", {"selected_round": optional(integer)}),
        BYE: MessageSchema("bye", {}),
    }


def encode_message(message: Message) -> bytes:
    """The bytes of ``message`` (kind, sender, receiver and payload only)."""
    return encode({"kind": message.get_type(), "sender": int(message.get_sender_id()),
                   "receiver": int(message.get_receiver_id()), PAYLOAD: payload_of(message)})


def decode_message(data: bytes, *, peer: str, accepted: Mapping[str, MessageSchema],
                   max_bytes: Optional[int] = None) -> Message:
    """The message in ``data``, checked: a kind in ``accepted``, integer sender and receiver, a
    payload that fits the kind's schema.  :class:`CodecError` naming ``peer`` otherwise."""
    try:
        tree = decode(data, max_bytes=max_bytes)
    except CodecError as error:
        raise CodecError(f"{peer} sent bytes that are not a fedml_prr message: {error}") from None
    if not isinstance(tree, dict) or set(tree) != {"kind", "sender", "receiver", PAYLOAD}:
        raise CodecError(f"{peer} sent a message whose envelope is not kind, sender, receiver, payload")
    kind = tree["kind"]
    if kind not in accepted:
        raise CodecError(f"{peer} sent a {kind!r} message; this party accepts {', '.join(accepted)}")
    for field in ("sender", "receiver"):
        if integer(tree[field]) is not None:
            raise CodecError(f"{peer} sent a message whose {field} is not an integer")
    payload = accepted[kind].check(tree[PAYLOAD], peer)
    return make(kind, tree["sender"], tree["receiver"], payload)
