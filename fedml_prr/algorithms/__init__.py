"""Algorithm registry: each algorithm is one module registering its client, server and params.

Adding an algorithm = one new module here + one import line below.  Nothing in this package
imports ``fedml``; :mod:`fedml_prr.fedml_adapter` wraps these classes for FedML's runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Type

from ..registry import Registry
from ..training.federated import FederatedClient, FederatedServer


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm: its client and server classes and its params dataclass."""

    name: str
    client: Type[FederatedClient]
    server: Type[FederatedServer]
    params: type
    summary: str


ALGORITHMS: Registry[AlgorithmSpec] = Registry("algorithm")


def register_algorithm(name: str, *, client, server, params, summary: str) -> AlgorithmSpec:
    spec = AlgorithmSpec(name, client, server, params, summary)
    ALGORITHMS.register(name)(spec)
    return spec


def get_algorithm(name: str) -> AlgorithmSpec:
    return ALGORITHMS.get(name)


from . import centralized, ditto, fedavg, fedbn, fedlc, fedper, fedprox, fedrep, local, prr  # noqa: E402,F401
from . import fedala, fedavg_ft, fedrod, scaffold  # noqa: E402,F401
from . import prr_batched, single_model_batched  # noqa: E402

#: the batched engine's cohorts (``prr_engine: batched``), registered on import
BATCHED_COHORTS = (prr_batched.PRRCohort, single_model_batched.SingleModelCohort)
