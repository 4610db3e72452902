"""FedBN (Li et al., ICLR 2021): FedAvg whose BatchNorm layers never leave the client."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, batchnorm_keys


@dataclass(frozen=True)
class FedBNParams:
    """FedBN has no hyper-parameters beyond the shared schedule."""


class FedBNClient(SingleModelClient):
    def local_keys(self):
        return batchnorm_keys(self.model)


SPEC = register_algorithm("FedBN", client=FedBNClient, server=AveragingServer, params=FedBNParams,
                          summary="FedAvg with BatchNorm kept local (Li et al. 2021)")
