"""Server-side validation of client uploads, before anything is aggregated.

A distributed server receives uploads from processes it does not control: a client with a bug,
a diverged optimizer (NaN weights) or a mismatched model would otherwise corrupt every silo's
next model.  :class:`UpdateValidator` checks every upload of a step *before* the algorithm's
server sees any of them and raises :class:`UpdateError` naming the silo and what is wrong; the
server's state is then untouched (the aggregator also restores it if the algorithm itself fails).

What is checked (algorithm-independent):

- protocol fields: ``silo`` (the expected one), ``step`` (the step being aggregated),
  ``num_samples`` (a positive int, the same at every step as at the handshake);
- the handshake's ``class_counts``: a non-negative integer tensor ``[num_classes]`` with a
  positive total;
- every *model state* (a mapping of parameter names to tensors, e.g. ``state`` or ``deputy``):
  names known to the model, each with the model's shape and dtype, floating values finite; and
  the same names from every silo at a step and from step to step (the first accepted set of a
  field is its schema);
- every other tensor (prototypes, ...): finite, and the same shape from every silo and at every
  step for that field;
- numbers (losses, ...): finite.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

Message = Dict[str, Any]

#: Fields that are not training payload (bookkeeping read by the runtimes).
PROTOCOL_FIELDS = ("silo", "step", "num_samples", "records")


class UpdateError(ValueError):
    """A client upload failed validation; the message names the silo."""

    def __init__(self, silo: int, step: int, problem: str) -> None:
        super().__init__(f"rejected the update of silo {silo} at step {step}: {problem}; "
                         "nothing was aggregated and the server's state is unchanged")
        self.silo = silo
        self.step = step
        self.problem = problem


def _is_state(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _nonfinite(tensor: torch.Tensor) -> int:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return 0
    return int((~torch.isfinite(tensor)).sum())


class UpdateValidator:
    """Checks the uploads of each step against the model and against what was accepted before.

    Parameters
    ----------
    reference_state:
        The model's ``state_dict()`` (names, shapes, dtypes of every possible state entry).
    num_clients, num_classes:
        Of the federation.
    uniform:
        Whether every silo uploads the same fields (False for algorithms where one silo does
        something different, e.g. the Centralized reference).
    """

    def __init__(self, reference_state: Mapping[str, torch.Tensor], *, num_clients: int, num_classes: int,
                 uniform: bool = True) -> None:
        self.reference = {k: (tuple(v.shape), v.dtype) for k, v in reference_state.items()}
        self.num_clients = num_clients
        self.num_classes = num_classes
        self.uniform = uniform
        self.sample_counts: Dict[int, int] = {}
        self._state_keys: Dict[str, frozenset] = {}
        self._tensor_shapes: Dict[str, Tuple[int, ...]] = {}

    def check(self, step: int, uploads: Mapping[int, Message]) -> None:
        """Validate all uploads of ``step``; raise :class:`UpdateError` at the first problem."""
        for silo in sorted(uploads):
            self._check_protocol(step, silo, uploads[silo])
        if self.uniform:
            self._check_same_fields(step, uploads)
        state_keys: Dict[str, frozenset] = {}
        shapes: Dict[str, Tuple[int, ...]] = {}
        for silo in sorted(uploads):
            for name, value in uploads[silo].items():
                if name in PROTOCOL_FIELDS:
                    continue
                problem = self._check_value(name, value, state_keys, shapes)
                if problem:
                    raise UpdateError(silo, step, problem)
        self._state_keys.update(state_keys)
        self._tensor_shapes.update(shapes)
        if step == 0:
            self.sample_counts.update({s: int(u["num_samples"]) for s, u in uploads.items()})

    # ----------------------------------------------------------------- pieces
    def _check_protocol(self, step: int, silo: int, upload: Any) -> None:
        if not isinstance(upload, Mapping):
            raise UpdateError(silo, step, f"an upload must be a dict, got {type(upload).__name__}")
        if upload.get("silo") != silo or upload.get("step") != step:
            raise UpdateError(silo, step, f"it is addressed as silo {upload.get('silo')!r}, step {upload.get('step')!r}")
        if not 0 <= silo < self.num_clients:
            raise UpdateError(silo, step, f"silo index outside 0..{self.num_clients - 1}")
        n = upload.get("num_samples")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise UpdateError(silo, step, f"num_samples must be a positive integer, got {n!r}")
        expected = self.sample_counts.get(silo)
        if expected is not None and int(n) != expected:
            raise UpdateError(silo, step, f"num_samples is {n} but the silo reported {expected} training samples "
                                          "at the handshake")
        if step == 0:
            counts = upload.get("class_counts")
            if not isinstance(counts, torch.Tensor) or counts.dtype.is_floating_point or counts.dtype == torch.bool:
                raise UpdateError(silo, step, "class_counts must be an integer tensor")
            if tuple(counts.shape) != (self.num_classes,):
                raise UpdateError(silo, step, f"class_counts has shape {tuple(counts.shape)}, expected ({self.num_classes},)")
            if int(counts.min()) < 0 or int(counts.sum()) < 1:
                raise UpdateError(silo, step, f"class_counts {counts.tolist()} must be non-negative with a "
                                              "positive total")

    def _check_same_fields(self, step: int, uploads: Mapping[int, Message]) -> None:
        fields = {silo: frozenset(u) - frozenset(PROTOCOL_FIELDS) for silo, u in uploads.items()}
        union = frozenset().union(*fields.values())
        for silo in sorted(fields):
            missing = sorted(union - fields[silo])
            if missing:
                raise UpdateError(silo, step, f"missing field(s) {missing} that the other silos sent")

    def _check_value(self, name: str, value: Any, state_keys: Dict[str, frozenset],
                     shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
        if _is_state(value):
            unknown = sorted(set(value) - set(self.reference))
            if unknown:
                return f"{name!r} holds entries the model does not have: {unknown[:5]}"
            for key, tensor in value.items():
                shape, dtype = self.reference[key]
                if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                    return (f"{name}[{key!r}] has shape {tuple(tensor.shape)} and dtype {tensor.dtype}; the "
                            f"model's has shape {shape} and dtype {dtype}")
                bad = _nonfinite(tensor)
                if bad:
                    return f"{name}[{key!r}] has {bad} non-finite value(s)"
            keys = frozenset(value)
            expected = self._state_keys.get(name, state_keys.get(name))
            if expected is not None and keys != expected:
                return (f"{name!r} has entries {sorted(keys ^ expected)[:5]} missing or extra compared with "
                        "the other uploads of this field")
            state_keys.setdefault(name, keys)
        elif isinstance(value, torch.Tensor):
            bad = _nonfinite(value)
            if bad:
                return f"{name!r} has {bad} non-finite value(s)"
            expected_shape = self._tensor_shapes.get(name, shapes.get(name))
            if expected_shape is not None and tuple(value.shape) != expected_shape:
                return f"{name!r} has shape {tuple(value.shape)}, expected {expected_shape}"
            shapes.setdefault(name, tuple(value.shape))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isnan(float(value)) or math.isinf(float(value)):
                # a loss of NaN means the client diverged: its weights are garbage too
                return f"{name!r} is {value}"
        return None
