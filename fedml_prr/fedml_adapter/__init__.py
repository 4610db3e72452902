"""The only layer that imports ``fedml``: offline initialisation and the FedML trainer classes."""

from .offline import fedml_args, init_fedml_offline
from .trainers import AlgorithmClientTrainer, AlgorithmServerAggregator, PFAServerAggregator, PRRClientTrainer

__all__ = ["fedml_args", "init_fedml_offline", "AlgorithmClientTrainer", "AlgorithmServerAggregator",
           "PRRClientTrainer", "PFAServerAggregator"]
