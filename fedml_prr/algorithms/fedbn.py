"""FedBN (Li et al., ICLR 2021): FedAvg whose BatchNorm layers never leave the client."""

from __future__ import annotations

from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient, batchnorm_keys


class FedBNClient(SingleModelClient):
    def local_keys(self):
        return batchnorm_keys(self.model)


SPEC = register_algorithm("FedBN", client=FedBNClient, server=AveragingServer)
