"""The typed wire codec of the protocol: tensors as safetensors, everything else as JSON, no pickle.

What crosses a process boundary between parties of a federation (and what a resume file holds)
is a tree of dicts (string keys), lists, strings, numbers, booleans, None and tensors.
:func:`encode` turns such a tree into bytes::

    b"FPRR1\\n" | header length (8 bytes, big endian) | header (UTF-8 JSON) | safetensors blob

The header is the tree with every tensor replaced by ``{"$tensor": "<name>"}``; the blob holds the
tensors (``safetensors.torch``, which stores dtype, shape and raw data and executes nothing on
load).  :func:`decode` reverses it and refuses anything else: a wrong magic, a truncated or
oversized message, a header that is not JSON, a reference to a missing tensor, a tensor not
referenced, a tree deeper than :data:`MAX_DEPTH`.  Nothing is ever unpickled, so a hostile peer
can at worst send a message that is rejected.

:class:`MessageSchema` then checks a decoded protocol message field by field against what the
protocol allows (:data:`PROTOCOL_UPLOAD`, :data:`PROTOCOL_MESSAGE`, plus the algorithm's own
fields declared as ``UPLOAD_FIELDS`` / ``MESSAGE_FIELDS`` on its client and server classes).
"""

from __future__ import annotations

import json
import numbers
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch

MAGIC = b"FPRR1\n"
MAX_DEPTH = 12
_TENSOR = "$tensor"


class CodecError(ValueError):
    """Bytes that are not a valid message of this codec, or a value it cannot carry."""


# ----------------------------------------------------------------------------- encode / decode
def encode(tree: Any) -> bytes:
    """Bytes of ``tree`` (dicts with string keys, lists/tuples, str, int, float, bool, None, tensors).

    Raises :class:`CodecError` for any other value (a custom object, a dict with a non-string key).
    """
    from safetensors.torch import save

    tensors: Dict[str, torch.Tensor] = {}

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CodecError(f"the message is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().to("cpu").contiguous().clone()  # safetensors refuses shared storage
            return {_TENSOR: name}
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise CodecError(f"dict keys must be strings, got {sorted(map(repr, value))[:3]}")
            if _TENSOR in value:
                raise CodecError(f"the key {_TENSOR!r} is reserved")
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, depth + 1) for v in value]
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        raise CodecError(f"cannot carry a {type(value).__name__}; only tensors, dicts, lists, strings, numbers, "
                         "booleans and None travel")

    header = json.dumps(walk(tree, 0), separators=(",", ":")).encode("utf-8")
    blob = save(tensors) if tensors else b""
    return MAGIC + struct.pack(">Q", len(header)) + header + blob


def decode(data: bytes, *, max_bytes: Optional[int] = None) -> Any:
    """The tree :func:`encode` made; :class:`CodecError` for anything else (see the module docstring)."""
    from safetensors.torch import load

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if max_bytes is not None and len(data) > max_bytes:
        raise CodecError(f"the message has {len(data)} bytes, more than the limit of {max_bytes}")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise CodecError("not a fedml_prr message (wrong magic bytes)")
    (header_length,) = struct.unpack(">Q", data[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if header_length > len(data) - start:
        raise CodecError("the message is truncated (its header runs past its end)")
    try:
        header = json.loads(data[start:start + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CodecError(f"the message header is not JSON ({error})") from None
    blob = data[start + header_length:]
    try:
        tensors = load(blob) if blob else {}
    except Exception as error:  # safetensors raises its own error types for malformed data
        raise CodecError(f"the message's tensor block is not valid safetensors ({error})") from None
    used = set()

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CodecError(f"the message is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if _TENSOR in value:
                name = value[_TENSOR]
                if len(value) != 1 or not isinstance(name, str) or name not in tensors or name in used:
                    raise CodecError(f"bad tensor reference {value!r}")
                used.add(name)
                return tensors[name]
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        return value

    tree = walk(header, 0)
    if used != set(tensors):
        raise CodecError(f"the message carries {len(set(tensors) - used)} tensor(s) it does not use")
    return tree


# ----------------------------------------------------------------------------- schema
Check = Callable[[Any], Optional[str]]  # None when the value is acceptable, else what is wrong


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(value: Any) -> Optional[str]:
    return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"


def number(value: Any) -> Optional[str]:
    return None if _is_number(value) else "a number"


def boolean(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else "true or false"


def text(value: Any) -> Optional[str]:
    return None if isinstance(value, str) else "a string"


def tensor(value: Any) -> Optional[str]:
    return None if isinstance(value, torch.Tensor) else "a tensor"


def state(value: Any) -> Optional[str]:
    ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    return None if ok else "a state dict (names -> tensors)"


def optional(check: Check) -> Check:
    def check_optional(value: Any) -> Optional[str]:
        return None if value is None else (None if check(value) is None else f"{check(value)} or null")

    return check_optional


def json_value(value: Any, depth: int = 0) -> bool:
    """A JSON value (no tensor) nested at most :data:`MAX_DEPTH` deep."""
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(value, (bool, str)) or _is_number(value):
        return True
    if isinstance(value, list):
        return all(json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_value(v, depth + 1) for k, v in value.items())
    return False


def records(value: Any) -> Optional[str]:
    """Metric records: a list of dicts of JSON values (numbers may be NaN)."""
    ok = isinstance(value, list) and all(isinstance(r, dict) and json_value(r) for r in value)
    return None if ok else "a list of metric records (dicts of numbers and strings)"


@dataclass(frozen=True)
class MessageSchema:
    """The fields a protocol message may carry and what each must be (``Check`` functions)."""

    name: str
    fields: Mapping[str, Check]
    required: tuple = ()

    def extended(self, fields: Mapping[str, Check]) -> "MessageSchema":
        return MessageSchema(self.name, {**self.fields, **fields}, self.required)

    def check(self, message: Any, peer: str) -> Dict[str, Any]:
        """``message`` if it fits the schema, else :class:`CodecError` naming ``peer`` and the field."""
        if not isinstance(message, dict):
            raise CodecError(f"the {self.name} {peer} sent is not a mapping")
        unknown = sorted(set(message) - set(self.fields))
        if unknown:
            raise CodecError(f"the {self.name} {peer} sent has field(s) {unknown} that the protocol does not allow")
        missing = [f for f in self.required if f not in message]
        if missing:
            raise CodecError(f"the {self.name} {peer} sent lacks its field(s) {missing}")
        for name, value in message.items():
            problem = self.fields[name](value)
            if problem is not None:
                raise CodecError(f"the {self.name} {peer} sent has a {name!r} that is not {problem}")
        return message


#: what every upload may carry besides the algorithm's fields (training/federated.py)
PROTOCOL_UPLOAD = MessageSchema("upload", {"silo": integer, "step": integer, "num_samples": integer,
                                           "class_counts": tensor, "records": records},
                                required=("silo", "step", "num_samples"))
#: what every server message may carry besides the algorithm's fields
PROTOCOL_MESSAGE = MessageSchema("server message", {"silo": integer, "step": integer, "final": boolean,
                                                    "end": boolean, "selected_round": optional(integer),
                                                    "global_class_counts": tensor,
                                                    "in_next_round": boolean},
                                 required=("silo", "step"))
