"""FedAvg (McMahan et al., AISTATS 2017): local SGD with cross-entropy, sample-weighted average.

Every client reports its copy of the global model, as FedAvg papers do; its retrogress is the
change from the locally trained model to the freshly received global one.
"""

from __future__ import annotations

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient


class FedAvgClient(SingleModelClient):
    """Shares every key of its model (the :class:`SingleModelClient` default)."""


SPEC = register_algorithm("FedAvg", client=FedAvgClient, server=AveragingServer)
