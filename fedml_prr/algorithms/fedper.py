"""FedPer (Arivazhagan et al., 2019): shared body averaged, personal classifier head kept local.

The head is the model's final classifier (``classifier_key``); body and head train together.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, head_keys


@dataclass(frozen=True)
class FedPerParams:
    """FedPer has no hyper-parameters beyond the shared schedule."""


class FedPerClient(SingleModelClient):
    def local_keys(self):
        return head_keys(self.model)


SPEC = register_algorithm("FedPer", client=FedPerClient, server=AveragingServer, params=FedPerParams,
                          summary="shared body, personal classifier head (Arivazhagan et al. 2019)")
