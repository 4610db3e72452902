"""FedProx (Li et al., MLSys 2020): FedAvg plus a proximal term ``mu/2 ||w - w_global||^2``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..training.federated import StepInfo
from .registry import register_algorithm
from .single_model import AveragingServer, SingleModelClient


@dataclass(frozen=True)
class FedProxParams:
    """``fedprox_mu`` (FedML's key, also ``prr_fedprox_mu``): proximal weight; the paper's
    experiments use mu in {0.001, 0.01, 0.1, 1}; 0.01 is FedML's default."""

    fedprox_mu: float = 0.01

    def __post_init__(self) -> None:
        if self.fedprox_mu < 0:
            raise ValueError(f"prr_fedprox_mu must be >= 0, got {self.fedprox_mu}")


class FedProxClient(SingleModelClient):
    def train_round(self, info: StepInfo) -> None:
        self.anchor = [p.detach().clone() for p in self.model.parameters()]  # w_global at round start
        super().train_round(info)

    def regularizer(self) -> Optional[torch.Tensor]:
        squared = sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), self.anchor))
        return 0.5 * self.params.fedprox_mu * squared


SPEC = register_algorithm("FedProx", client=FedProxClient, server=AveragingServer, params=FedProxParams,
                          summary="FedAvg with a proximal term mu/2 ||w - w_global||^2 (Li et al. 2020)")
