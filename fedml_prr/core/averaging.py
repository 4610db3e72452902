"""Plain (sample-)weighted averaging of state dicts, the FedAvg server rule.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017.  Pure torch; inputs are not mutated.
"""

from __future__ import annotations

from typing import Collection, Dict, List, Mapping, Optional, Sequence

import torch

StateDict = Dict[str, torch.Tensor]


def weighted_average(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Optional[Sequence[float]] = None,
) -> StateDict:
    """Average K state dicts with ``weights`` (``None`` = uniform).

    Floating tensors are averaged in float32 or wider and cast back; integer buffers
    (``num_batches_tracked``) take the maximum over clients.
    """
    if len(states) == 0:
        raise ValueError("need at least one client state")
    if weights is None:
        weights = [1.0] * len(states)
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape != (len(states),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(states)} non-negative numbers with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out: StateDict = {}
    for key, first in states[0].items():
        stacked = torch.stack([s[key].detach() for s in states])
        if first.is_floating_point():
            acc = stacked.float() if first.dtype in (torch.float16, torch.bfloat16) else stacked
            out[key] = torch.tensordot(w.to(acc.dtype).to(acc.device), acc, dims=([0], [0])).to(first.dtype)
        else:
            out[key] = stacked.max(dim=0).values
    return out


def average_keeping_local(
    states: Sequence[Mapping[str, torch.Tensor]],
    local_keys: Collection[str],
    weights: Optional[Sequence[float]] = None,
) -> List[StateDict]:
    """Weighted average of every key except ``local_keys``, which each client keeps.

    Returns one state per client (FedBN / FedRep style personalization).
    """
    shared = weighted_average([{k: v for k, v in s.items() if k not in local_keys} for s in states], weights)
    return [{k: (s[k].detach().clone() if k in local_keys else shared[k].clone()) for k in s} for s in states]
