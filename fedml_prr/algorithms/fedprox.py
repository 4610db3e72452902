"""FedProx (Li et al., MLSys 2020): FedAvg plus a proximal term ``mu/2 ||w - w_global||^2``."""

from __future__ import annotations

from typing import Optional

import torch

from ..training.federated import StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient


class FedProxClient(SingleModelClient):
    def train_round(self, info: StepInfo) -> None:
        self.anchor = [p.detach().clone() for p in self.model.parameters()]  # w_global at round start
        super().train_round(info)

    def regularizer(self) -> Optional[torch.Tensor]:
        squared = sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), self.anchor))
        return 0.5 * self.params.fedprox_mu * squared


SPEC = register_algorithm("FedProx", client=FedProxClient, server=AveragingServer)
