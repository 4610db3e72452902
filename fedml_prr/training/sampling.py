"""Client sampling: which silos train in a round when ``client_num_per_round < client_num_in_total``.

FedML's convention (``FedAVGAggregator.client_sampling`` of its cross-silo server and
``FedAvgAPI._client_sampling`` of its sp simulator, fedml 0.9.6)::

    np.random.seed(round_idx)
    client_indexes = np.random.choice(range(client_num_in_total), client_num_per_round, replace=False)

so the cohort of a round depends only on the round and the two counts - not on ``random_seed``:
every algorithm and every seed of a comparison trains the same clients in the same round, and a
FedAvg run of FedML itself would pick the same ones.  :func:`sample_clients` draws exactly that
(from its own ``RandomState``, so numpy's global generator is left alone) and returns it sorted.
Every runtime calls it on the server side (:class:`~fedml_prr.training.coordinator.Coordinator`),
so one process, MPI and gRPC train the same cohorts.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np


def sample_clients(round_idx: int, total: int, per_round: Optional[int]) -> List[int]:
    """The silos that train in round ``round_idx`` (sorted), FedML's draw (module docstring).

    ``per_round`` None or ``>= total``: every silo, as FedML.
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if round_idx < 0:
        raise ValueError(f"round_idx must be >= 0, got {round_idx}")
    if per_round is None or per_round >= total:
        return list(range(total))
    if per_round < 1:
        raise ValueError(f"client_num_per_round must be >= 1, got {per_round}")
    drawn = np.random.RandomState(round_idx).choice(range(total), per_round, replace=False)
    return sorted(int(i) for i in drawn)
