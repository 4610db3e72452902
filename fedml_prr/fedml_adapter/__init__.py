"""The only layer that imports ``fedml``: FedML's transports carrying our protocol, offline
initialisation, ``install()``'s patches, and FedML's own trainers for cross-checks."""

from .offline import fedml_args, init_fedml_offline
from .trainers import (AlgorithmClientTrainer, AlgorithmServerAggregator, PFAServerAggregator, PRRClientTrainer,
                       SiloHooks)

__all__ = ["fedml_args", "init_fedml_offline", "AlgorithmClientTrainer", "AlgorithmServerAggregator",
           "PRRClientTrainer", "PFAServerAggregator", "SiloHooks"]
