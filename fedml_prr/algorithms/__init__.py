"""Algorithm registry: each algorithm is one module registering its client, server and params.

Adding an algorithm = one new module here + one import line below + its declaration (hyper-parameters,
summary) in :mod:`fedml_prr.config.algorithms`, which the config checks without importing torch.  Nothing in this package
imports ``fedml``; :mod:`fedml_prr.fedml_adapter` carries these classes over FedML's runtimes.
"""

from __future__ import annotations

from . import centralized, ditto, fedavg, fedbn, fedlc, fedper, fedprox, fedrep, local, prr  # noqa: F401 (registers)
from . import fedala, fedavg_ft, fedrod, scaffold  # noqa: F401 (registers)
from . import prr_batched, single_model_batched  # noqa: F401 (registers the batched engine's cohorts)
from .registry import ALGORITHMS, AlgorithmSpec, get_algorithm, register_algorithm

__all__ = ["ALGORITHMS", "AlgorithmSpec", "get_algorithm", "register_algorithm"]
