"""FedPer (Arivazhagan et al., 2019): shared body averaged, personal classifier head kept local.

The head is the model's final classifier (``classifier_key``); body and head train together.
"""

from __future__ import annotations

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, head_keys


class FedPerClient(SingleModelClient):
    def local_keys(self):
        return head_keys(self.model)


SPEC = register_algorithm("FedPer", client=FedPerClient, server=AveragingServer)
